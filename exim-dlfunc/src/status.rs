//! Exim's return codes for a `${dlfunc}` function (and its main-log flag), in one place
//! and pinned by a test.
//!
//! The values come from Exim's `local_scan.h` (package `exim4-dev`). The library returns
//! [`OK`] with a verdict string for every call it can answer; [`ERROR`] only when Exim
//! hands it no place to put a result. [`FAIL_FORCED`] is never returned: it makes a
//! `condition =` pass and silently skips a `set`, which would turn a failure into a verdict.

use std::ffi::c_int;

/// Success: Exim copies the string in `*yield` into the expansion.
pub const OK: c_int = 0;

/// The expansion fails as a temporary problem; Exim also writes the panic log.
#[allow(dead_code)] // Documented for completeness; the library never returns it.
pub const DEFER: c_int = 1;

/// The expansion fails (451 / 435 in SMTP); `*yield` is the error message.
#[allow(dead_code)] // Documented for completeness; the library never returns it.
pub const FAIL: c_int = 2;

/// The expansion fails as an internal error; Exim writes the panic log.
pub const ERROR: c_int = 3;

/// A "forced" failure; never returned by this library (see the module documentation).
#[allow(dead_code)] // Documented so that nobody adds it back by accident.
pub const FAIL_FORCED: c_int = 4;

/// The `log_write` flag that writes to Exim's main log.
pub const LOG_MAIN: c_int = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// Where Debian's `exim4-dev` installs the header that defines the codes.
    const HEADER: &str = "/usr/include/exim4/local_scan.h";

    /// Reads `#define NAME value` from the header text.
    fn define(header: &str, name: &str) -> Option<c_int> {
        header.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("#define") && words.next() == Some(name))
                .then(|| words.next()?.parse().ok())
                .flatten()
        })
    }

    #[test]
    fn codes_match_exims_header() {
        let header = match std::fs::read_to_string(HEADER) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("note: {HEADER} is not installed (exim4-dev); compare skipped");
                return;
            }
            Err(e) => panic!("cannot read {HEADER}: {e}"),
        };
        for (name, ours) in [
            ("OK", OK),
            ("DEFER", DEFER),
            ("FAIL", FAIL),
            ("ERROR", ERROR),
            ("FAIL_FORCED", FAIL_FORCED),
            ("LOG_MAIN", LOG_MAIN),
        ] {
            assert_eq!(define(&header, name), Some(ours), "{name} in {HEADER}");
        }
    }

    #[test]
    fn codes_are_the_documented_values() {
        assert_eq!((OK, DEFER, FAIL, ERROR, FAIL_FORCED), (0, 1, 2, 3, 4));
    }
}
