//! The arguments of a call (everything after the function name) turned into a verb and
//! validated `key=value` pairs, or a refusal that says exactly what was wrong.
//!
//! Exim hands the library C strings; `ffi` has already checked the pointers, the count
//! (at most [`MAX_ARGS`]) and the lengths (at most [`MAX_ARG_BYTES`] each). Here:
//!
//! * `check` takes the verb first; it must be one of [`VERBS`] (any letter case).
//! * Each further argument is `key=value` (the value is taken as written, the library
//!   quotes it on the wire), or starts with `+` and carries several pairs in the wire
//!   syntax (`+helo="a b" tls=X`), which is what Exim's `${quote:...}` produces. An empty
//!   argument (a conditional that expanded to nothing) is skipped.
//! * Keys are checked with [`access_wire::is_valid_key`]; a key given twice is refused.
//! * Values are bytes, kept as Exim gave them: what an SMTP client sent (a user name, a
//!   sender, a recipient) need not be UTF-8 and may be empty, and it must never decide
//!   whether the oracle is asked. The wire encoder carries any byte
//!   ([`access_wire::encode_bytes`]). Only what the administrator writes (the verb and
//!   the keys) is checked.

use std::fmt;

use access_wire::{WireError, is_valid_key, parse_pairs};

/// At most this many arguments after the function name: Exim 4.96 leaves its argument
/// array unterminated at 8 and the process dies with SIGSEGV.
pub const MAX_ARGS: usize = 7;

/// The most of one argument read, in bytes (the length of a whole request line); the
/// rest of a longer one is cut off, never refused.
pub const MAX_ARG_BYTES: usize = access_wire::MAX_LINE_BYTES;

/// The protocol verbs that `check` forwards (the protocol's list in `access-wire`).
pub use access_wire::VERBS;

/// Why the arguments of a call were refused; the text goes to Exim's main log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// The argument array pointer is null.
    NullList,
    /// Exim passed a negative count.
    NegativeCount(i64),
    /// More than [`MAX_ARGS`] arguments.
    TooMany(i64),
    /// Argument at this position (1-based) is a null pointer.
    NullArg(usize),
    /// `check` without a verb.
    MissingVerb,
    /// The first argument of `check` is not a protocol verb.
    UnknownVerb(String),
    /// Argument at this position has no `=`.
    NotKeyValue(usize),
    /// Argument at this position has an invalid key.
    BadKey(usize, String),
    /// The packed (`+`) argument at this position does not tokenize.
    Packed(usize, WireError),
    /// The same key twice.
    Duplicate(String),
    /// `auth` without a `result=` pair.
    MissingResult,
    /// `auth` with a `result=` other than `ok` or `fail`.
    BadResult(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::NullList => write!(f, "argument list is a null pointer"),
            ArgError::NegativeCount(n) => write!(f, "negative argument count {n}"),
            ArgError::TooMany(n) => write!(
                f,
                "{n} arguments, at most {MAX_ARGS} are allowed (Exim crashes at 8): \
                 pack several pairs into one {{+key=value key=value}} argument"
            ),
            ArgError::NullArg(i) => write!(f, "argument {i} is a null pointer"),
            ArgError::MissingVerb => write!(
                f,
                "missing verb: the first argument of check is one of {}",
                VERBS.join(" ")
            ),
            ArgError::UnknownVerb(v) => write!(
                f,
                "unknown verb {:?}: expected one of {}",
                shorten(v),
                VERBS.join(" ")
            ),
            ArgError::NotKeyValue(i) => write!(f, "argument {i} is not key=value"),
            ArgError::BadKey(i, key) => write!(
                f,
                "argument {i} has an invalid key {:?} (letters, digits, _ - . only)",
                shorten(key)
            ),
            ArgError::Packed(i, e) => write!(f, "argument {i} (packed pairs): {e}"),
            ArgError::Duplicate(key) => write!(f, "key {key} given twice"),
            ArgError::MissingResult => {
                write!(
                    f,
                    "missing result=ok or result=fail (the local password check)"
                )
            }
            ArgError::BadResult(v) => {
                write!(
                    f,
                    "result={:?}: expected result=ok or result=fail",
                    shorten(v)
                )
            }
        }
    }
}

impl std::error::Error for ArgError {}

/// The first 32 characters of `s`, so that a log line stays readable.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Validated `key=value` pairs in the order given; keys are unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    /// The pairs in order; values as bytes.
    list: Vec<(String, Vec<u8>)>,
}

impl Pairs {
    /// The value of `key` as bytes, if present.
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        self.list
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `key`, if present and UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bytes(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get_bytes(key).is_some()
    }

    /// Adds a pair; refuses a key that is already present.
    pub fn push(&mut self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), ArgError> {
        if self.contains(key) {
            return Err(ArgError::Duplicate(key.to_string()));
        }
        self.list.push((key.to_string(), value.into()));
        Ok(())
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.list.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The values in order, to shorten them in place.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Vec<u8>> {
        self.list.iter_mut().map(|(_, v)| v)
    }

    /// How many pairs there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// A call's arguments, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The verb (lowercase), for `check`; `None` for `auth` and `configure`.
    pub verb: Option<&'static str>,
    /// Every pair but `password=`.
    pub pairs: Pairs,
    /// The value of `password=`, as bytes (see the module documentation).
    pub password: Option<Vec<u8>>,
}

/// The local password outcome that `auth` reports with `result=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalResult {
    /// The password was right (`result=ok`).
    Ok,
    /// The password was wrong or the user unknown (`result=fail`).
    Fail,
}

impl LocalResult {
    /// Reads `ok` or `fail`.
    pub fn parse(value: &str) -> Option<LocalResult> {
        match value {
            "ok" => Some(LocalResult::Ok),
            "fail" => Some(LocalResult::Fail),
            _ => None,
        }
    }
}

/// Validates the arguments of a call; `with_verb` for `check`, whose first one is the verb.
pub fn parse(raw: &[&[u8]], with_verb: bool) -> Result<Call, ArgError> {
    if raw.len() > MAX_ARGS {
        return Err(ArgError::TooMany(raw.len() as i64));
    }
    let mut call = Call {
        verb: None,
        pairs: Pairs::default(),
        password: None,
    };
    let mut rest = raw.iter().enumerate().map(|(i, a)| (i + 1, *a));
    if with_verb {
        let (_, first) = rest.next().ok_or(ArgError::MissingVerb)?;
        let verb = access_wire::text_from_bytes(first);
        let verb = verb.as_ref();
        if verb.is_empty() {
            return Err(ArgError::MissingVerb);
        }
        call.verb = Some(
            VERBS
                .into_iter()
                .find(|v| v.eq_ignore_ascii_case(verb))
                .ok_or_else(|| ArgError::UnknownVerb(verb.to_string()))?,
        );
    }
    for (position, arg) in rest {
        add_argument(&mut call, position, arg)?;
    }
    Ok(call)
}

/// Adds one `key=value` or `+packed` argument to `call`.
fn add_argument(call: &mut Call, position: usize, arg: &[u8]) -> Result<(), ArgError> {
    if arg.is_empty() {
        return Ok(());
    }
    if let Some(password) = arg.strip_prefix(b"password=") {
        return set_password(call, password.to_vec());
    }
    if let Some(packed) = arg.strip_prefix(b"+") {
        let pairs = parse_pairs(packed).map_err(|e| ArgError::Packed(position, e))?;
        for (key, value) in pairs {
            if key == "password" {
                set_password(call, value.as_bytes().to_vec())?;
            } else {
                add_pair(call, key, value.into_owned().into_bytes())?;
            }
        }
        return Ok(());
    }
    let eq = arg
        .iter()
        .position(|&b| b == b'=')
        .ok_or(ArgError::NotKeyValue(position))?;
    let key = std::str::from_utf8(&arg[..eq])
        .ok()
        .filter(|k| is_valid_key(k))
        .ok_or_else(|| {
            ArgError::BadKey(
                position,
                access_wire::text_from_bytes(&arg[..eq]).into_owned(),
            )
        })?;
    add_pair(call, key, arg[eq + 1..].to_vec())
}

/// Records the password; refuses a second one.
fn set_password(call: &mut Call, password: Vec<u8>) -> Result<(), ArgError> {
    if call.password.is_some() {
        return Err(ArgError::Duplicate("password".into()));
    }
    call.password = Some(password);
    Ok(())
}

/// Adds a pair other than the password.
fn add_pair(call: &mut Call, key: &str, value: Vec<u8>) -> Result<(), ArgError> {
    call.pairs.push(key, value)
}

/// The `result=` of an `auth` call, read as leniently as possible: used to answer with the
/// local outcome even when another argument is refused.
pub fn local_result_hint(raw: &[&[u8]]) -> Option<LocalResult> {
    raw.iter().take(MAX_ARGS).find_map(|arg| {
        if let Some(value) = arg.strip_prefix(b"result=") {
            return LocalResult::parse(std::str::from_utf8(value).ok()?);
        }
        let pairs = parse_pairs(arg.strip_prefix(b"+")?).ok()?;
        let (_, value) = pairs.iter().find(|(k, _)| *k == "result")?;
        LocalResult::parse(value)
    })
}

/// The required `result=` of an `auth` call.
pub fn local_result(pairs: &Pairs) -> Result<LocalResult, ArgError> {
    let value = pairs.get("result").ok_or(ArgError::MissingResult)?;
    LocalResult::parse(value).ok_or_else(|| ArgError::BadResult(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(args: &'a [&'a str]) -> Vec<&'a [u8]> {
        args.iter().map(|a| a.as_bytes()).collect()
    }

    fn pairs_of(call: &Call) -> Vec<(&str, &str)> {
        call.pairs
            .iter()
            .map(|(k, v)| (k, std::str::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn plain_pairs_keep_their_values_as_written() {
        let call = parse(
            &raw(&[
                "RCPT",
                "user=bob",
                "ip=",
                "rcpt=a \"b\"@example.com",
                "sender=x=y",
            ]),
            true,
        )
        .unwrap();
        assert_eq!(call.verb, Some("rcpt"));
        assert_eq!(
            pairs_of(&call),
            [
                ("user", "bob"),
                ("ip", ""),
                ("rcpt", "a \"b\"@example.com"),
                ("sender", "x=y")
            ]
        );
        assert_eq!(call.password, None);
    }

    #[test]
    fn packed_arguments_carry_several_pairs() {
        let call = parse(
            &raw(&[
                "auth",
                "user=alice",
                "+helo=\"my host\" tls=TLS1.3:AES port=4711",
                "+",
                "",
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            pairs_of(&call),
            [
                ("user", "alice"),
                ("helo", "my host"),
                ("tls", "TLS1.3:AES"),
                ("port", "4711")
            ]
        );
    }

    #[test]
    fn passwords_are_kept_apart_even_when_not_utf8() {
        let args: Vec<&[u8]> = vec![b"user=alice", b"password=p\xe4ss word", b"result=ok"];
        let call = parse(&args, false).unwrap();
        assert_eq!(call.password.as_deref(), Some(&b"p\xe4ss word"[..]));
        assert!(!call.pairs.contains("password"));
        let packed = parse(&raw(&["+user=a password=\"s e\""]), false).unwrap();
        assert_eq!(packed.password.as_deref(), Some(&b"s e"[..]));
    }

    #[test]
    fn duplicates_are_refused_across_plain_and_packed_arguments() {
        let cases: &[&[&str]] = &[
            &["user=a", "user=b"],
            &["user=a", "+ip=1 user=b"],
            &["+user=a user=b"],
            &["password=a", "+password=b"],
        ];
        for args in cases {
            let err = parse(&raw(args), false).unwrap_err();
            let duplicate = matches!(
                err,
                ArgError::Duplicate(_) | ArgError::Packed(_, WireError::DuplicateKey(_))
            );
            assert!(duplicate, "{args:?}: {err}");
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_their_position() {
        let cases: &[(&[&str], ArgError)] = &[
            (&[], ArgError::MissingVerb),
            (&[""], ArgError::MissingVerb),
            (&["helo"], ArgError::UnknownVerb("helo".into())),
            (&["rcpt", "user"], ArgError::NotKeyValue(2)),
            (
                &["rcpt", "user=a", "=x"],
                ArgError::BadKey(3, String::new()),
            ),
            (&["rcpt", "us er=a"], ArgError::BadKey(2, "us er".into())),
            (
                &["rcpt", "+user"],
                ArgError::Packed(2, WireError::MissingEquals(0)),
            ),
            (
                &["rcpt", "+user=\"a"],
                ArgError::Packed(2, WireError::UnterminatedQuote("user".into())),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(&raw(args), true).unwrap_err(), *want, "{args:?}");
        }
    }

    #[test]
    fn more_than_seven_arguments_are_refused() {
        let seven = ["ping", "a=1", "b=2", "c=3", "d=4", "e=5", "f=6"];
        assert!(parse(&raw(&seven), true).is_ok());
        let eight = ["ping", "a=1", "b=2", "c=3", "d=4", "e=5", "f=6", "g=7"];
        let err = parse(&raw(&eight), true).unwrap_err();
        assert_eq!(err, ArgError::TooMany(8));
        assert!(err.to_string().contains("at most 7"), "{err}");
    }

    #[test]
    fn values_that_are_not_utf8_or_empty_are_kept_as_given() {
        let args: Vec<&[u8]> = vec![b"rcpt", b"user=", b"rcpt=\xff@x", b"sender=a\xc3"];
        let call = parse(&args, true).unwrap();
        assert_eq!(call.pairs.get_bytes("user"), Some(&b""[..]));
        assert_eq!(call.pairs.get_bytes("rcpt"), Some(&b"\xff@x"[..]));
        assert_eq!(call.pairs.get_bytes("sender"), Some(&b"a\xc3"[..]));
        assert_eq!(
            call.pairs.get("rcpt"),
            None,
            "get is for UTF-8 settings only"
        );
        // Packed pairs: raw bytes (what ${quote:} leaves) and \xHH escapes alike.
        let args: Vec<&[u8]> = vec![b"mail", b"+sender=\"b\xffob\" helo=\"x\\x00y\""];
        let call = parse(&args, true).unwrap();
        assert_eq!(call.pairs.get("sender"), Some("b\\xffob"));
        assert_eq!(call.pairs.get("helo"), Some("x\\x00y"));
        // What the administrator writes is still checked.
        let args: Vec<&[u8]> = vec![b"r\xffcpt"];
        assert_eq!(
            parse(&args, true).unwrap_err(),
            ArgError::UnknownVerb("r\\xffcpt".into())
        );
        let args: Vec<&[u8]> = vec![b"rcpt", b"us\xffer=a"];
        assert_eq!(
            parse(&args, true).unwrap_err(),
            ArgError::BadKey(2, "us\\xffer".into())
        );
    }

    #[test]
    fn the_local_result_is_found_even_in_refused_calls() {
        let args: Vec<&[u8]> = vec![b"us\xffer=a", b"result=ok"];
        assert!(parse(&args, false).is_err());
        assert_eq!(local_result_hint(&args), Some(LocalResult::Ok));
        let packed = raw(&["+user=a result=fail", "bad"]);
        assert_eq!(local_result_hint(&packed), Some(LocalResult::Fail));
        assert_eq!(local_result_hint(&raw(&["result=maybe"])), None);

        let call = parse(&raw(&["user=a"]), false).unwrap();
        assert_eq!(local_result(&call.pairs), Err(ArgError::MissingResult));
        let call = parse(&raw(&["result=OK"]), false).unwrap();
        assert_eq!(
            local_result(&call.pairs),
            Err(ArgError::BadResult("OK".into()))
        );
    }
}
