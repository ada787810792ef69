//! Fixed-window rate limits per (agent, session, rule).
//!
//! A window opens at the first call and resets on its own once `window` has passed; a refused
//! call learns exactly when the window reopens. Idle windows are pruned so the map stays bounded
//! by the number of active sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// (agent, session, rule id).
type WindowKey = (String, String, String);

#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Window start and calls counted in it.
    windows: Mutex<HashMap<WindowKey, (Instant, u32)>>,
}

impl RateLimiter {
    /// Counts one call; `Err(retry_after)` when the window is full.
    pub fn check(
        &self,
        agent: &str,
        session: &str,
        rule: &str,
        max: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut windows = self.windows.lock().expect("rate lock");
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(3600));
        }
        let entry = windows
            .entry((agent.to_owned(), session.to_owned(), rule.to_owned()))
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= max {
            return Err(window - now.duration_since(entry.0));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_max_and_reopens_after_the_window() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        for _ in 0..3 {
            assert!(limiter.check("a", "s", "r", 3, window, t0).is_ok());
        }
        let retry = limiter
            .check("a", "s", "r", 3, window, t0 + Duration::from_millis(500))
            .unwrap_err();
        assert_eq!(retry, Duration::from_millis(1500));
        assert!(
            limiter
                .check("a", "other-session", "r", 3, window, t0)
                .is_ok(),
            "tracked per session"
        );
        assert!(
            limiter.check("a", "s", "r", 3, window, t0 + window).is_ok(),
            "window reset"
        );
    }
}
