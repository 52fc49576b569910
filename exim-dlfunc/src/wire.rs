//! Building the request line sent to the oracle, with the shared encoder from
//! [`access_wire`] so that the oracle reads back exactly the values Exim gave.

use std::fmt;

use access_wire::{MAX_LINE_BYTES, push_pair};

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
pub fn request_line(verb: &str, pairs: &Pairs) -> Result<String, TooLong> {
    let mut line = String::with_capacity(256);
    line.push_str(verb);
    for (key, value) in pairs.iter() {
        push_pair(&mut line, key, value);
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(TooLong(line.len()));
    }
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_read_back_intact() {
        let mut pairs = Pairs::default();
        let awkward = "a \"quoted\"\\ name\nwith\tcontrol\r";
        pairs.push("user", awkward.to_string()).unwrap();
        pairs.push("ip", String::new()).unwrap();
        let line = request_line("auth", &pairs).unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line only: {line:?}");
        let request = access_wire::parse_request(line.trim_end_matches('\n').as_bytes()).unwrap();
        assert_eq!(request.verb, "auth");
        assert_eq!(request.get("user"), Some(awkward));
        assert_eq!(request.get("ip"), Some(""));
    }

    #[test]
    fn the_line_limit_is_enforced() {
        let mut pairs = Pairs::default();
        // "ping x=" is 7 bytes: fill up to exactly the limit, then one more.
        pairs.push("x", "a".repeat(MAX_LINE_BYTES - 7)).unwrap();
        assert!(request_line("ping", &pairs).is_ok());
        let mut pairs = Pairs::default();
        pairs.push("x", "a".repeat(MAX_LINE_BYTES - 6)).unwrap();
        assert_eq!(
            request_line("ping", &pairs),
            Err(TooLong(MAX_LINE_BYTES + 1))
        );
    }
}
