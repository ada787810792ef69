//! Fixed-window rate limits per (agent, session, rule).
//!
//! A window opens at the first call and resets on its own once `window` has passed; a refused
//! call learns exactly when the window reopens. Idle windows are pruned so the map stays bounded
//! by the number of active sessions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// (agent, session, rule id); the session is empty for per-agent limits.
type WindowKey = (String, String, String);

/// Expired windows are swept once per this many checks, keeping the map as small as the set of
/// (agent, session, rule) triples active within their window.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug, Default)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Window start, its length, and calls counted in it.
    windows: HashMap<WindowKey, (Instant, Duration, u32)>,
    checks: u32,
}

impl RateLimiter {
    /// Counts one call; `Err(retry_after)` when the window is full.
    pub fn check(
        &self,
        (agent, session, rule): (&str, &str, &str),
        max: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("rate lock");
        state.checks = state.checks.wrapping_add(1);
        if state.checks.is_multiple_of(SWEEP_EVERY) {
            state
                .windows
                .retain(|_, (start, length, _)| now.duration_since(*start) < *length);
        }
        let entry = state
            .windows
            .entry((agent.to_owned(), session.to_owned(), rule.to_owned()))
            .or_insert((now, window, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, window, 0);
        }
        if entry.2 >= max {
            return Err(window - now.duration_since(entry.0));
        }
        entry.2 += 1;
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
            assert!(limiter.check(("a", "s", "r"), 3, window, t0).is_ok());
        }
        let retry = limiter
            .check(("a", "s", "r"), 3, window, t0 + Duration::from_millis(500))
            .unwrap_err();
        assert_eq!(retry, Duration::from_millis(1500));
        assert!(
            limiter
                .check(("a", "other-session", "r"), 3, window, t0)
                .is_ok(),
            "tracked per session"
        );
        assert!(
            limiter
                .check(("a", "s", "r"), 3, window, t0 + window)
                .is_ok(),
            "window reset"
        );
    }
}
