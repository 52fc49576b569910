//! Building the request line sent to the oracle, with the shared encoder from
//! [`access_wire`] so that the oracle reads back exactly the values Exim gave.

use std::fmt;

use access_wire::{MAX_LINE_BYTES, push_pair_bytes};

use crate::args::Pairs;

/// A request longer than the protocol allows ([`MAX_LINE_BYTES`]); the length it would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request too long ({} bytes, limit {MAX_LINE_BYTES})",
            self.0
        )
    }
}

impl std::error::Error for TooLong {}

/// The request line `VERB key=value ...` followed by its `\n`.
///
/// Values may be any bytes ([`access_wire::encode_bytes`]). A line that would be longer
/// than the protocol allows is not refused (a client's long name must not skip the
/// check): the longest value is halved until it fits. Only a line whose keys alone are
/// too long (the administrator's mistake) is refused.
pub fn request_line(verb: &str, pairs: &mut Pairs) -> Result<String, TooLong> {
    loop {
        let mut line = String::with_capacity(256);
        line.push_str(verb);
        for (key, value) in pairs.iter() {
            push_pair_bytes(&mut line, key, value);
        }
        if line.len() <= MAX_LINE_BYTES {
            line.push('\n');
            return Ok(line);
        }
        match pairs.values_mut().max_by_key(|v| v.len()) {
            Some(longest) if !longest.is_empty() => longest.truncate(longest.len() / 2),
            _ => return Err(TooLong(line.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_read_back_intact() {
        let mut pairs = Pairs::default();
        let awkward = "a \"quoted\"\\ name\nwith\tcontrol\r";
        pairs.push("user", awkward).unwrap();
        pairs.push("ip", "").unwrap();
        let line = request_line("auth", &mut pairs).unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line only: {line:?}");
        let request = access_wire::parse_request(line.trim_end_matches('\n').as_bytes()).unwrap();
        assert_eq!(request.verb, "auth");
        assert_eq!(request.get("user"), Some(awkward));
        assert_eq!(request.get("ip"), Some(""));
    }

    #[test]
    fn long_values_are_shortened_to_fit_the_line() {
        let mut pairs = Pairs::default();
        // "ping x=" is 7 bytes: fill up to exactly the limit; it is sent as it is.
        pairs.push("x", "a".repeat(MAX_LINE_BYTES - 7)).unwrap();
        let line = request_line("ping", &mut pairs).unwrap();
        assert_eq!(line.len(), MAX_LINE_BYTES + 1);
        // Longer values (also ones that grow when escaped) are cut until the line fits.
        let mut pairs = Pairs::default();
        pairs.push("user", "alice").unwrap();
        pairs.push("rcpt", vec![0xff; MAX_LINE_BYTES]).unwrap();
        pairs.push("sender", "b".repeat(MAX_LINE_BYTES)).unwrap();
        let line = request_line("rcpt", &mut pairs).unwrap();
        assert!(line.len() <= MAX_LINE_BYTES + 1, "{}", line.len());
        let request = access_wire::parse_request(line.trim_end().as_bytes()).unwrap();
        assert_eq!(request.get("user"), Some("alice"));
        assert!(request.get("rcpt").unwrap().starts_with("\\xff"));
        assert!(request.get("sender").unwrap().starts_with("bbb"));
        // Only keys too long by themselves are refused.
        let mut pairs = Pairs::default();
        pairs.push(&"k".repeat(MAX_LINE_BYTES), "").unwrap();
        assert!(request_line("ping", &mut pairs).is_err());
    }
}
