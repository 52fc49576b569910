//! Reading one request line into a verb and its key/value pairs, without copying bare values.

use std::borrow::Cow;
use std::fmt;

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
    /// The line is not valid UTF-8; the byte offset of the first bad byte.
    NotUtf8(usize),
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
    /// An escape other than `\"`, `\\`, `\n`, `\r`; key and the escaped character.
    BadEscape(String, char),
    /// A NUL or newline inside a quoted value; key.
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
            WireError::NotUtf8(at) => write!(f, "request is not valid utf-8 at byte {at}"),
            WireError::BadVerb(v) => write!(f, "invalid verb {:?}", truncate(v)),
            WireError::MissingEquals(at) => write!(f, "expected key=value at byte {at}"),
            WireError::BadKey(k) => write!(f, "invalid key {:?}", truncate(k)),
            WireError::BadBareValue(k, at) => write!(
                f,
                "unquoted value of {k} has a character that needs quoting at byte {at}"
            ),
            WireError::UnterminatedQuote(k) => write!(f, "unterminated quoted value of {k}"),
            WireError::BadEscape(k, c) => write!(f, "unknown escape \\{c} in value of {k}"),
            WireError::ForbiddenByte(k) => write!(f, "nul byte in value of {k}"),
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
pub fn parse_request(line: &[u8]) -> Result<Request<'_>, WireError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(WireError::TooLong(line.len()));
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| WireError::NotUtf8(e.valid_up_to()))?;
    let start = skip_blanks(text, 0);
    let verb_end = text[start..]
        .find([' ', '\t'])
        .map_or(text.len(), |i| start + i);
    let verb = &text[start..verb_end];
    if verb.is_empty() {
        return Err(WireError::Empty);
    }
    if !verb.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(WireError::BadVerb(verb.to_string()));
    }
    let pairs = parse_pairs_from(text, verb_end)?;
    Ok(Request { verb, pairs })
}

/// Tokenizes a run of `key=value` pairs with no verb (the library's packed `+` argument).
pub fn parse_pairs(text: &str) -> Result<Vec<Pair<'_>>, WireError> {
    if text.len() > MAX_LINE_BYTES {
        return Err(WireError::TooLong(text.len()));
    }
    parse_pairs_from(text, 0)
}

fn skip_blanks(text: &str, mut at: usize) -> usize {
    let b = text.as_bytes();
    while at < b.len() && (b[at] == b' ' || b[at] == b'\t') {
        at += 1;
    }
    at
}

fn parse_pairs_from(text: &str, from: usize) -> Result<Vec<Pair<'_>>, WireError> {
    let bytes = text.as_bytes();
    let mut pairs: Vec<Pair<'_>> = Vec::with_capacity(8);
    let mut at = skip_blanks(text, from);
    while at < bytes.len() {
        let word_start = at;
        let eq = text[at..]
            .find(['=', ' ', '\t'])
            .map(|i| at + i)
            .filter(|&i| bytes[i] == b'=')
            .ok_or(WireError::MissingEquals(word_start))?;
        let key = &text[at..eq];
        if !is_valid_key(key) {
            return Err(WireError::BadKey(key.to_string()));
        }
        at = eq + 1;
        let value: Cow<'_, str>;
        if bytes.get(at) == Some(&b'"') {
            let (v, next) = parse_quoted(text, at + 1, key)?;
            value = v;
            at = next;
            if at < bytes.len() && bytes[at] != b' ' && bytes[at] != b'\t' {
                return Err(WireError::TrailingAfterQuote(key.to_string()));
            }
        } else {
            let end = text[at..].find([' ', '\t']).map_or(text.len(), |i| at + i);
            let raw = &text[at..end];
            if let Some(bad) = raw
                .bytes()
                .position(|b| b < b' ' || b == b'"' || b == b'\\' || b == 0x7f)
            {
                return Err(WireError::BadBareValue(key.to_string(), at + bad));
            }
            value = Cow::Borrowed(raw);
            at = end;
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(WireError::DuplicateKey(key.to_string()));
        }
        pairs.push((key, value));
        at = skip_blanks(text, at);
    }
    Ok(pairs)
}

/// Reads a quoted value starting just after its opening quote; returns the value and the
/// offset just after the closing quote.
fn parse_quoted<'a>(
    text: &'a str,
    start: usize,
    key: &str,
) -> Result<(Cow<'a, str>, usize), WireError> {
    let bytes = text.as_bytes();
    let mut owned: Option<String> = None;
    let mut run_start = start;
    let mut at = start;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let value = match owned {
                    Some(mut s) => {
                        s.push_str(&text[run_start..at]);
                        Cow::Owned(s)
                    }
                    None => Cow::Borrowed(&text[start..at]),
                };
                return Ok((value, at + 1));
            }
            b'\\' => {
                let s = owned.get_or_insert_with(String::new);
                s.push_str(&text[run_start..at]);
                let escaped = match bytes.get(at + 1) {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(_) => {
                        let c = text[at + 1..].chars().next().unwrap_or('?');
                        return Err(WireError::BadEscape(key.to_string(), c));
                    }
                    None => return Err(WireError::UnterminatedQuote(key.to_string())),
                };
                s.push(escaped);
                at += 2;
                run_start = at;
            }
            0 | b'\n' => return Err(WireError::ForbiddenByte(key.to_string())),
            _ => at += 1,
        }
    }
    Err(WireError::UnterminatedQuote(key.to_string()))
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
                b"auth user=\"a\0b\"",
                WireError::ForbiddenByte("user".into()),
            ),
            (
                b"auth user=\"a\"b",
                WireError::TrailingAfterQuote("user".into()),
            ),
            (
                b"auth user=a user=b",
                WireError::DuplicateKey("user".into()),
            ),
            (b"auth user=\xff", WireError::NotUtf8(10)),
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
        let p = parse_pairs("helo=\"a b\" tls=TLS1.3").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].1, "a b");
        assert_eq!(parse_pairs("").unwrap(), vec![]);
    }

    proptest! {
        /// Whatever the value (except NUL), encoding and tokenizing give it back intact.
        #[test]
        fn encoded_values_round_trip(value in "[^\0]{0,200}") {
            let mut line = String::from("auth user=");
            encode_value(&mut line, &value);
            line.push_str(" ip=192.0.2.1");
            let r = parse_request(line.as_bytes()).unwrap();
            prop_assert_eq!(r.get("user"), Some(value.as_str()));
            prop_assert_eq!(r.get("ip"), Some("192.0.2.1"));
        }

        /// No input makes the tokenizer panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&bytes);
        }
    }
}
