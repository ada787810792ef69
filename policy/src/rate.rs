//! Fixed-window rate limits per (agent, session, rule).
//!
//! A window opens at the first call and resets on its own once `window` has passed; a refused
//! call learns exactly when the window reopens.
//!
//! Memory is bounded whatever agents send. The session key is client-chosen (a clientInfo name or
//! `X-Verdict-Session`, up to the body limit), so a window is keyed by its SHA-256, never by the
//! text. Each agent keeps at most [`MAX_SESSION_WINDOWS`] per-session windows: past it, expired
//! windows are swept and then the oldest window is evicted (that session starts a fresh window —
//! an agent that rotates session keys escapes a per-session limit anyway, which is why per-agent
//! limits exist). Per-agent windows are never evicted: there is one per rule, bounded by the
//! policy. Agent ids and rule ids come from the config and the policy, not from requests.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-session windows one agent may hold at once.
pub const MAX_SESSION_WINDOWS: usize = 4096;
/// Expired windows are swept once per this many checks, keeping the map as small as the set of
/// (agent, session, rule) triples active within their window.
const SWEEP_EVERY: u32 = 1024;

/// SHA-256 of the session key; `None` for per-agent limits.
type SessionDigest = Option<[u8; 32]>;

#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    max_session_windows: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_SESSION_WINDOWS)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Per agent: its windows by (session digest, rule id).
    agents: HashMap<String, HashMap<(SessionDigest, String), Window>>,
    checks: u32,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    length: Duration,
    calls: u32,
}

impl Window {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.start) >= self.length
    }
}

impl RateLimiter {
    /// A limiter keeping at most `max_session_windows` per-session windows per agent.
    pub fn with_capacity(max_session_windows: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_session_windows: max_session_windows.max(1),
        }
    }

    /// Counts one call; `Err(retry_after)` when the window is full. An empty session is a
    /// per-agent limit.
    pub fn check(
        &self,
        (agent, session, rule): (&str, &str, &str),
        max: u32,
        window: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let digest = (!session.is_empty()).then(|| Sha256::digest(session.as_bytes()).into());
        let mut state = self.state.lock().expect("rate lock");
        state.checks = state.checks.wrapping_add(1);
        if state.checks.is_multiple_of(SWEEP_EVERY) {
            for windows in state.agents.values_mut() {
                windows.retain(|_, w| !w.expired(now));
            }
            state.agents.retain(|_, windows| !windows.is_empty());
        }
        let windows = state.agents.entry(agent.to_owned()).or_default();
        let key = (digest, rule.to_owned());
        if digest.is_some() && !windows.contains_key(&key) {
            make_room(windows, self.max_session_windows, now);
        }
        let entry = windows.entry(key).or_insert(Window {
            start: now,
            length: window,
            calls: 0,
        });
        if entry.expired(now) {
            *entry = Window {
                start: now,
                length: window,
                calls: 0,
            };
        }
        if entry.calls >= max {
            return Err(window.saturating_sub(now.duration_since(entry.start)));
        }
        entry.calls += 1;
        Ok(())
    }

    /// Windows held for `agent` (per-session and per-agent).
    pub fn windows_of(&self, agent: &str) -> usize {
        let state = self.state.lock().expect("rate lock");
        state.agents.get(agent).map_or(0, HashMap::len)
    }
}

/// Leaves room for one more per-session window: sweeps expired windows, then evicts the oldest
/// per-session one.
fn make_room(windows: &mut HashMap<(SessionDigest, String), Window>, max: usize, now: Instant) {
    let sessions = |w: &HashMap<(SessionDigest, String), Window>| {
        w.keys().filter(|(digest, _)| digest.is_some()).count()
    };
    if sessions(windows) < max {
        return;
    }
    windows.retain(|_, w| !w.expired(now));
    if sessions(windows) < max {
        return;
    }
    let oldest = windows
        .iter()
        .filter(|((digest, _), _)| digest.is_some())
        .min_by_key(|(_, w)| w.start)
        .map(|(key, _)| key.clone());
    if let Some(oldest) = oldest {
        windows.remove(&oldest);
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

    #[test]
    fn session_windows_per_agent_are_bounded_and_agent_windows_survive() {
        let limiter = RateLimiter::with_capacity(8);
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert!(limiter.check(("a", "", "per-agent"), 1, hour, t0).is_ok());
        for i in 0..100u64 {
            let session = format!("{i}{}", "x".repeat(10_000));
            let now = t0 + Duration::from_millis(i);
            assert!(limiter.check(("a", &session, "r"), 1, hour, now).is_ok());
        }
        assert_eq!(limiter.windows_of("a"), 8 + 1);
        assert!(
            limiter.check(("a", "", "per-agent"), 1, hour, t0).is_err(),
            "the per-agent window is never evicted"
        );
        assert!(
            limiter
                .check(
                    ("a", &format!("99{}", "x".repeat(10_000)), "r"),
                    1,
                    hour,
                    t0 + hour / 2
                )
                .is_err(),
            "the newest session windows stay"
        );
        assert_eq!(limiter.windows_of("b"), 0);
    }
}
