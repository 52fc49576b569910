//! Time as the oracle counts and shows it: whole Unix seconds ([`Secs`]), RFC 3339 and
//! short human durations. A leaf: every layer may use it.

use jiff::Timestamp;

/// Unix time in whole seconds: the resolution of every window.
pub type Secs = i64;

/// A time in seconds as RFC 3339 (empty when out of range).
pub fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `90` → `90 s`, `300` → `5 min`, `3600` → `1 h`, `5400` → `90 min`.
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
