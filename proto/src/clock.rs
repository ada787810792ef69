//! The contract's time: event, finding and head times are nanoseconds since the Unix epoch in an
//! `i64` (good until 2262). One clock for every crate, so no two read "now" differently.

/// Now, in nanoseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
