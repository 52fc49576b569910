//! Reading one request line into a verb and its key/value pairs, without copying bare values.

use std::borrow::Cow;
use std::fmt;

use crate::text::{text_from_bytes, text_from_vec};
use crate::{MAX_LINE_BYTES, is_valid_key};

/// One `key=value` pair; the value is borrowed unless it had escapes.
pub type Pair<'a> = (&'a str, Cow<'a, str>);

/// A tokenized request: the verb and its pairs in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The verb, lowercased by the caller's choice: as written here.
    pub verb: &'a str,
    /// The pairs in the order written; keys are unique.
    pub pairs: Vec<Pair<'a>>,
}

impl<'a> Request<'a> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }
}

/// Why a line is not a valid request. The messages are what the oracle sends back after
/// `error `, so they are short, lowercase and name the offending place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The line has no verb.
    Empty,
    /// The line is longer than [`MAX_LINE_BYTES`].
    TooLong(usize),
    /// The verb has characters other than ASCII letters.
    BadVerb(String),
    /// A word at this byte offset is not `key=value`.
    MissingEquals(usize),
    /// A key with characters other than letters, digits, `_`, `-`, `.`.
    BadKey(String),
    /// A bare value holds a character that needs quoting; key and offset.
    BadBareValue(String, usize),
    /// A quoted value was not closed; key.
    UnterminatedQuote(String),
    /// An escape other than `\"`, `\\`, `\n`, `\r`, `\xHH`; key and the escaped character.
    BadEscape(String, char),
    /// A newline inside a quoted value (only possible in packed pairs); key.
    ForbiddenByte(String),
    /// A closing quote not followed by a space or the end; key.
    TrailingAfterQuote(String),
    /// The same key twice.
    DuplicateKey(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty => write!(f, "empty request"),
            WireError::TooLong(n) => {
                write!(
                    f,
                    "request line too long ({n} bytes, limit {MAX_LINE_BYTES})"
                )
            }
            WireError::BadVerb(v) => write!(f, "invalid verb {:?}", truncate(v)),
            WireError::MissingEquals(at) => write!(f, "expected key=value at byte {at}"),
            WireError::BadKey(k) => write!(f, "invalid key {:?}", truncate(k)),
            WireError::BadBareValue(k, at) => write!(
                f,
                "unquoted value of {k} has a character that needs quoting at byte {at}"
            ),
            WireError::UnterminatedQuote(k) => write!(f, "unterminated quoted value of {k}"),
            WireError::BadEscape(k, c) => write!(f, "unknown escape \\{c} in value of {k}"),
            WireError::ForbiddenByte(k) => write!(f, "newline in value of {k}"),
            WireError::TrailingAfterQuote(k) => {
                write!(f, "closing quote of {k} not followed by a space")
            }
            WireError::DuplicateKey(k) => write!(f, "duplicate key {k}"),
        }
    }
}

impl std::error::Error for WireError {}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Tokenizes one request line (without its newline; a trailing `\r` is ignored).
///
/// The verb and the keys are ASCII; a value may hold any bytes but a newline (quoted
/// values also take the escape `\xHH`), and is given back as its text form
/// ([`crate::text_from_bytes`]): what a client sent never makes a request unreadable.
pub fn parse_request(line: &[u8]) -> Result<Request<'_>, WireError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(WireError::TooLong(line.len()));
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = skip_blanks(line, 0);
    let verb_end = find_blank(line, start);
    let verb = &line[start..verb_end];
    if verb.is_empty() {
        return Err(WireError::Empty);
    }
    let text = Line::new(line);
    let verb = text
        .str(start, verb_end)
        .filter(|v| v.bytes().all(|b| b.is_ascii_alphabetic()))
        .ok_or_else(|| WireError::BadVerb(text_from_bytes(verb).into_owned()))?;
    let pairs = parse_pairs_from(text, verb_end)?;
    Ok(Request { verb, pairs })
}

/// Tokenizes a run of `key=value` pairs with no verb (the library's packed `+` argument).
pub fn parse_pairs(text: &[u8]) -> Result<Vec<Pair<'_>>, WireError> {
    if text.len() > MAX_LINE_BYTES {
        return Err(WireError::TooLong(text.len()));
    }
    parse_pairs_from(Line::new(text), 0)
}

/// A line's bytes, and the same as text when all of it is UTF-8 (nearly always): then a
/// key or value is a slice of that text, checked once for the whole line rather than
/// once per value. (A NUL can only stand in a quoted value, whose reader sees it.)
#[derive(Clone, Copy)]
struct Line<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn new(bytes: &'a [u8]) -> Line<'a> {
        Line {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
        }
    }

    /// The text form of `bytes[from..to]`, which holds no NUL.
    fn value(&self, from: usize, to: usize) -> Cow<'a, str> {
        match self.text.and_then(|t| t.get(from..to)) {
            Some(v) => Cow::Borrowed(v),
            None => text_from_bytes(&self.bytes[from..to]),
        }
    }

    /// `bytes[from..to]` as text, if it is UTF-8.
    fn str(&self, from: usize, to: usize) -> Option<&'a str> {
        match self.text {
            Some(t) => t.get(from..to),
            None => std::str::from_utf8(&self.bytes[from..to]).ok(),
        }
    }
}

fn skip_blanks(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
        at += 1;
    }
    at
}

/// The offset of the first blank at or after `from`, or the end.
fn find_blank(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .map_or(bytes.len(), |i| from + i)
}

fn parse_pairs_from(line: Line<'_>, from: usize) -> Result<Vec<Pair<'_>>, WireError> {
    let bytes = line.bytes;
    let mut pairs: Vec<Pair<'_>> = Vec::with_capacity(8);
    let mut at = skip_blanks(bytes, from);
    while at < bytes.len() {
        let word_start = at;
        let eq = bytes[at..]
            .iter()
            .position(|&b| b == b'=' || b == b' ' || b == b'\t')
            .map(|i| at + i)
            .filter(|&i| bytes[i] == b'=')
            .ok_or(WireError::MissingEquals(word_start))?;
        let key = line
            .str(at, eq)
            .filter(|k| is_valid_key(k))
            .ok_or_else(|| WireError::BadKey(text_from_bytes(&bytes[at..eq]).into_owned()))?;
        at = eq + 1;
        let value: Cow<'_, str>;
        if bytes.get(at) == Some(&b'"') {
            let (v, next) = parse_quoted(line, at + 1, key)?;
            value = v;
            at = next;
            if at < bytes.len() && bytes[at] != b' ' && bytes[at] != b'\t' {
                return Err(WireError::TrailingAfterQuote(key.to_string()));
            }
        } else {
            let end = find_blank(bytes, at);
            let raw = &bytes[at..end];
            if let Some(bad) = raw
                .iter()
                .position(|&b| b < b' ' || b == b'"' || b == b'\\' || b == 0x7f)
            {
                return Err(WireError::BadBareValue(key.to_string(), at + bad));
            }
            value = line.value(at, end);
            at = end;
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(WireError::DuplicateKey(key.to_string()));
        }
        pairs.push((key, value));
        at = skip_blanks(bytes, at);
    }
    Ok(pairs)
}

/// Reads a quoted value starting just after its opening quote; returns the value (its
/// text form) and the offset just after the closing quote.
fn parse_quoted<'a>(
    line: Line<'a>,
    start: usize,
    key: &str,
) -> Result<(Cow<'a, str>, usize), WireError> {
    let bytes = line.bytes;
    let mut owned: Option<Vec<u8>> = None;
    let mut nul = false;
    let mut run_start = start;
    let mut at = start;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let value = match owned {
                    Some(mut v) => {
                        v.extend_from_slice(&bytes[run_start..at]);
                        Cow::Owned(text_from_vec(v))
                    }
                    None if nul => text_from_bytes(&bytes[start..at]),
                    None => line.value(start, at),
                };
                return Ok((value, at + 1));
            }
            b'\\' => {
                let v = owned.get_or_insert_with(Vec::new);
                v.extend_from_slice(&bytes[run_start..at]);
                let (byte, len) = match bytes.get(at + 1) {
                    Some(b'"') => (b'"', 2),
                    Some(b'\\') => (b'\\', 2),
                    Some(b'n') => (b'\n', 2),
                    Some(b'r') => (b'\r', 2),
                    Some(b'x') => match (
                        bytes.get(at + 2).and_then(|&h| hex_digit(h)),
                        bytes.get(at + 3).and_then(|&l| hex_digit(l)),
                    ) {
                        (Some(h), Some(l)) => ((h << 4) | l, 4),
                        _ => return Err(WireError::BadEscape(key.to_string(), 'x')),
                    },
                    Some(_) => {
                        let c = text_from_bytes(&bytes[at + 1..])
                            .chars()
                            .next()
                            .unwrap_or('?');
                        return Err(WireError::BadEscape(key.to_string(), c));
                    }
                    None => return Err(WireError::UnterminatedQuote(key.to_string())),
                };
                v.push(byte);
                at += len;
                run_start = at;
            }
            b'\n' => return Err(WireError::ForbiddenByte(key.to_string())),
            0 => {
                nul = true;
                at += 1;
            }
            _ => at += 1,
        }
    }
    Err(WireError::UnterminatedQuote(key.to_string()))
}

/// The value of one hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_value;
    use proptest::prelude::*;

    #[test]
    fn parses_bare_and_quoted_pairs() {
        let r = parse_request(b"auth user=alice ip= result=ok helo=\"my host\"").unwrap();
        assert_eq!(r.verb, "auth");
        assert_eq!(r.get("user"), Some("alice"));
        assert_eq!(r.get("ip"), Some(""));
        assert_eq!(r.get("helo"), Some("my host"));
        assert!(matches!(r.pairs[3].1, Cow::Borrowed(_)));
    }

    #[test]
    fn unescapes_exim_quote_output() {
        let r = parse_request(b"rcpt user=\"a\\\"b\\\\c\\nd\\re\tf\"").unwrap();
        assert_eq!(r.get("user"), Some("a\"b\\c\nd\re\tf"));
    }

    #[test]
    fn tolerates_crlf_and_extra_blanks() {
        let r = parse_request(b"  ping \t \r").unwrap();
        assert_eq!(r.verb, "ping");
        assert!(r.pairs.is_empty());
    }

    #[test]
    fn rejects_malformed_lines_with_precise_errors() {
        let cases: &[(&[u8], WireError)] = &[
            (b"", WireError::Empty),
            (b"   ", WireError::Empty),
            (b"au+th", WireError::BadVerb("au+th".into())),
            (b"auth user", WireError::MissingEquals(5)),
            (b"auth =x", WireError::BadKey(String::new())),
            (b"auth u\"=x", WireError::BadKey("u\"".into())),
            (
                b"auth user=a\"b",
                WireError::BadBareValue("user".into(), 11),
            ),
            (
                b"auth user=\"abc",
                WireError::UnterminatedQuote("user".into()),
            ),
            (
                b"auth user=\"a\\qb\"",
                WireError::BadEscape("user".into(), 'q'),
            ),
            (
                b"auth user=\"a\\xzz\"",
                WireError::BadEscape("user".into(), 'x'),
            ),
            (
                b"auth user=\"a\\x4\"",
                WireError::BadEscape("user".into(), 'x'),
            ),
            (
                b"auth user=\"a\"b",
                WireError::TrailingAfterQuote("user".into()),
            ),
            (
                b"auth user=a user=b",
                WireError::DuplicateKey("user".into()),
            ),
            (b"au\xffth", WireError::BadVerb("au\\xffth".into())),
            (b"auth us\xffer=x", WireError::BadKey("us\\xffer".into())),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_request(line).unwrap_err(),
                *want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_and_nul_arrive_as_their_text_form() {
        let r = parse_request(b"mail user=alice ip=192.0.2.1 sender=b\xffob@example.com").unwrap();
        assert_eq!(r.get("sender"), Some("b\\xffob@example.com"));
        let r = parse_request(b"mail user=\"a\0b\" ip= sender=\"x\\xff\\x00\\x41\"").unwrap();
        assert_eq!(r.get("user"), Some("a\\x00b"));
        assert_eq!(r.get("sender"), Some("x\\xff\\x00A"));
        // ${quote:} of a literal backslash-x stays literal text.
        let r = parse_request(b"mail user=\"a\\\\xff\" ip=").unwrap();
        assert_eq!(r.get("user"), Some("a\\xff"));
        // Escaped bytes that make valid UTF-8 are that character.
        let r = parse_request(b"mail user=\"caf\\xc3\\xa9\" ip=").unwrap();
        assert_eq!(r.get("user"), Some("café"));
    }

    #[test]
    fn enforces_the_line_limit() {
        let mut line = b"ping x=".to_vec();
        line.resize(MAX_LINE_BYTES, b'a');
        assert!(parse_request(&line).is_ok());
        line.push(b'a');
        assert_eq!(
            parse_request(&line).unwrap_err(),
            WireError::TooLong(MAX_LINE_BYTES + 1)
        );
    }

    #[test]
    fn packed_pairs_parse_without_a_verb() {
        let p = parse_pairs(b"helo=\"a b\" tls=TLS1.3").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1, "a b");
        assert_eq!(parse_pairs(b"").unwrap(), vec![]);
    }

    proptest! {
        /// Whatever the value (except NUL, which arrives as `\x00`), encoding and
        /// tokenizing give it back intact.
        #[test]
        fn encoded_values_round_trip(value in "[^\0]{0,200}") {
            let mut line = String::from("auth user=");
            encode_value(&mut line, &value);
            line.push_str(" ip=192.0.2.1");
            let r = parse_request(line.as_bytes()).unwrap();
            prop_assert_eq!(r.get("user"), Some(value.as_str()));
            prop_assert_eq!(r.get("ip"), Some("192.0.2.1"));
        }

        /// Whatever the bytes (NUL and invalid UTF-8 included), encoding them and
        /// tokenizing gives back their text form.
        #[test]
        fn encoded_bytes_round_trip(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut line = String::from("mail user=");
            crate::encode_bytes(&mut line, &value);
            line.push_str(" ip=");
            let r = parse_request(line.as_bytes()).unwrap();
            let want = crate::text_from_bytes(&value);
            prop_assert_eq!(r.get("user"), Some(want.as_ref()));
        }

        /// No input makes the tokenizer panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&bytes);
        }
    }
}
