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
//! * Text must be UTF-8, except the value of a plain `password=` argument: it is only
//!   hashed (see [`crate::pwhash`]) and never sent, so its bytes are kept as they are.

use std::fmt;

use access_wire::{WireError, is_valid_key, parse_pairs};

/// At most this many arguments after the function name: Exim 4.96 leaves its argument
/// array unterminated at 8 and the process dies with SIGSEGV.
pub const MAX_ARGS: usize = 7;

/// The longest argument accepted, in bytes (the length of a whole request line).
pub const MAX_ARG_BYTES: usize = access_wire::MAX_LINE_BYTES;

/// The protocol verbs that `check` forwards.
pub const VERBS: [&str; 7] = ["auth", "mail", "rcpt", "data", "connect", "login", "ping"];

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
    /// Argument at this position is longer than [`MAX_ARG_BYTES`].
    TooLong(usize),
    /// Argument at this position is not UTF-8; its key when one could be read.
    NotUtf8(usize, Option<String>),
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
            ArgError::TooLong(i) => {
                write!(f, "argument {i} is longer than {MAX_ARG_BYTES} bytes")
            }
            ArgError::NotUtf8(i, Some(key)) => {
                write!(f, "argument {i} ({key}=...) is not valid utf-8")
            }
            ArgError::NotUtf8(i, None) => write!(f, "argument {i} is not valid utf-8"),
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
    /// The pairs in order.
    list: Vec<(String, String)>,
}

impl Pairs {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Adds a pair; refuses a key that is already present.
    pub fn push(&mut self, key: &str, value: String) -> Result<(), ArgError> {
        if self.contains(key) {
            return Err(ArgError::Duplicate(key.to_string()));
        }
        self.list.push((key.to_string(), value));
        Ok(())
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(k, v)| (k.as_str(), v.as_str()))
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
        let verb = std::str::from_utf8(first).map_err(|_| ArgError::NotUtf8(1, None))?;
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
    let text = std::str::from_utf8(arg).map_err(|_| {
        let key = arg
            .split(|&b| b == b'=')
            .next()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| is_valid_key(k) && k.len() < arg.len());
        ArgError::NotUtf8(position, key.map(str::to_string))
    })?;
    if let Some(packed) = text.strip_prefix('+') {
        let pairs = parse_pairs(packed).map_err(|e| ArgError::Packed(position, e))?;
        for (key, value) in pairs {
            if key == "password" {
                set_password(call, value.as_bytes().to_vec())?;
            } else {
                add_pair(call, key, value.into_owned())?;
            }
        }
        return Ok(());
    }
    let (key, value) = text
        .split_once('=')
        .ok_or(ArgError::NotKeyValue(position))?;
    if !is_valid_key(key) {
        return Err(ArgError::BadKey(position, key.to_string()));
    }
    add_pair(call, key, value.to_string())
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
fn add_pair(call: &mut Call, key: &str, value: String) -> Result<(), ArgError> {
    call.pairs.push(key, value)
}

/// The `result=` of an `auth` call, read as leniently as possible: used to answer with the
/// local outcome even when another argument is refused.
pub fn local_result_hint(raw: &[&[u8]]) -> Option<LocalResult> {
    raw.iter().take(MAX_ARGS).find_map(|arg| {
        if let Some(value) = arg.strip_prefix(b"result=") {
            return LocalResult::parse(std::str::from_utf8(value).ok()?);
        }
        let packed = std::str::from_utf8(arg.strip_prefix(b"+")?).ok()?;
        let pairs = parse_pairs(packed).ok()?;
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
        call.pairs.iter().collect()
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
    fn non_utf8_is_refused_naming_the_argument() {
        let args: Vec<&[u8]> = vec![b"rcpt", b"user=ok", b"rcpt=\xff@x"];
        let err = parse(&args, true).unwrap_err();
        assert_eq!(err, ArgError::NotUtf8(3, Some("rcpt".into())));
        assert_eq!(err.to_string(), "argument 3 (rcpt=...) is not valid utf-8");
        let args: Vec<&[u8]> = vec![b"r\xffcpt"];
        assert_eq!(parse(&args, true).unwrap_err(), ArgError::NotUtf8(1, None));
    }

    #[test]
    fn the_local_result_is_found_even_in_refused_calls() {
        let args: Vec<&[u8]> = vec![b"user=\xff", b"result=ok"];
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
