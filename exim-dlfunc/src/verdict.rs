//! The oracle's reply, or the failure to get one, turned into the string Exim expands to.
//!
//! `check` hands the reply line to the ACL as it is (`accept ...`, `defer <text>`,
//! `deny <text>`, `error ...`, `pong`). `auth` answers a `plaintext` authenticator's
//! `server_condition`, which Exim reads as: empty, `0`, `no`, `false` -> 535 (failed);
//! `1`, `yes`, `true` -> 235 (succeeded); anything else -> 435 `Unable to authenticate at
//! present: <text>`.
//!
//! | outcome | `check` | `auth`, result=ok | `auth`, result=fail |
//! |---|---|---|---|
//! | `accept [text]` | the line | `yes` | `no` |
//! | `deny [text]` | the line | `no` | `no` |
//! | `defer <text>` | the line | the text (see below) | the text (see below) |
//! | `error ...` | the line | fallback | fallback |
//! | `pong` | the line | fallback | fallback |
//! | unknown reply, unreachable, timeout, refused call | fallback | fallback | fallback |
//!
//! The fallback follows `on_error`: under `accept`, `check` answers `accept` and `auth`
//! the local result (`yes` / `no`); under `defer`, `check` answers
//! `defer access check unavailable, try again later` and `auth` a 435 text. A defer text
//! that Exim would read as a plain answer (`yes`, `no`, `true`, `false`, `1`, `0` or
//! empty, in any case and with blanks around it) is replaced by
//! [`AUTH_DEFER_PLAIN_ANSWER`], so that a deferral can never become a success or a
//! silent failure.

use std::ffi::CStr;

use crate::args::LocalResult;
use crate::settings::OnError;

/// `check`'s answer when no verdict can be had under `on_error=accept`.
pub const CHECK_FALLBACK_ACCEPT: &str = "accept";

/// `check`'s answer when no verdict can be had under `on_error=defer`.
pub const CHECK_FALLBACK_DEFER: &str = "defer access check unavailable, try again later";

/// `check`'s answer after an internal error (a caught panic) under `on_error=defer`; a C
/// string, as `ffi` hands it to Exim without building anything.
pub const CHECK_PANIC_DEFER: &CStr = c"defer access check failed";

/// `auth`'s answer (a 435 text) when no verdict can be had under `on_error=defer`.
pub const AUTH_UNAVAILABLE: &str = "authentication check unavailable";

/// Replaces a `defer` text that Exim would read as a plain yes / no.
pub const AUTH_DEFER_PLAIN_ANSWER: &str = "temporarily unavailable";

pub use access_wire::Reply;

/// Splits a reply line (without its newline); `None` for a verdict word the library does
/// not know, which is handled like a failure. The grammar is `access-wire`'s, the one
/// the oracle writes with.
pub fn parse_reply(line: &str) -> Option<Reply<'_>> {
    Reply::parse(line)
}

/// The reply line with control characters (a stray `\r`, tabs) turned into spaces: the
/// text may end up in an SMTP response, where they would break the framing.
pub fn clean_line(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `check`'s answer when no verdict could be had.
pub fn check_fallback(on_error: OnError) -> &'static str {
    match on_error {
        OnError::Accept => CHECK_FALLBACK_ACCEPT,
        OnError::Defer => CHECK_FALLBACK_DEFER,
    }
}

/// `auth`'s answer when no verdict could be had: the local result or a 435 text.
pub fn auth_fallback(local: Option<LocalResult>, on_error: OnError) -> &'static str {
    match (on_error, local) {
        (OnError::Accept, Some(LocalResult::Ok)) => "yes",
        (OnError::Accept, Some(LocalResult::Fail) | None) => "no",
        (OnError::Defer, _) => AUTH_UNAVAILABLE,
    }
}

/// `auth`'s answer to a reply; `None` when the reply is no verdict (`error`, `pong`) and
/// the caller should use [`auth_fallback`].
pub fn auth_answer(reply: Reply<'_>, local: LocalResult) -> Option<String> {
    match reply {
        Reply::Accept(_) => Some(match local {
            LocalResult::Ok => "yes".to_string(),
            LocalResult::Fail => "no".to_string(),
        }),
        Reply::Deny(_) => Some("no".to_string()),
        Reply::Defer(text) => Some(if reads_as_plain_answer(text) {
            AUTH_DEFER_PLAIN_ANSWER.to_string()
        } else {
            text.to_string()
        }),
        Reply::Error(_) | Reply::Pong => None,
    }
}

/// Whether Exim's `server_condition` would read `text` as a yes / no rather than a
/// deferral (`auths/check_serv_cond.c`), with blanks around it ignored to be safe.
fn reads_as_plain_answer(text: &str) -> bool {
    let t = text.trim();
    ["", "0", "1", "no", "yes", "false", "true"]
        .iter()
        .any(|plain| t.eq_ignore_ascii_case(plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use LocalResult::{Fail, Ok};
    use OnError::{Accept, Defer};

    #[test]
    fn replies_parse_into_verdicts() {
        assert_eq!(parse_reply("accept"), Some(Reply::Accept("")));
        assert_eq!(parse_reply("accept fine"), Some(Reply::Accept("fine")));
        assert_eq!(
            parse_reply("defer account on hold"),
            Some(Reply::Defer("account on hold"))
        );
        assert_eq!(parse_reply("deny no"), Some(Reply::Deny("no")));
        assert_eq!(
            parse_reply("error missing ip"),
            Some(Reply::Error("missing ip"))
        );
        assert_eq!(parse_reply("pong"), Some(Reply::Pong));
        for unknown in ["", "Accept", "hold x", "pong x", " accept"] {
            assert_eq!(parse_reply(unknown), None, "{unknown:?}");
        }
    }

    /// The whole mapping table of the module documentation, for `auth`.
    #[test]
    fn auth_mapping_table() {
        let table: &[(&str, LocalResult, OnError, &str)] = &[
            ("accept", Ok, Accept, "yes"),
            ("accept", Fail, Accept, "no"),
            ("accept welcome back", Ok, Defer, "yes"),
            ("accept", Fail, Defer, "no"),
            ("deny account disabled", Ok, Accept, "no"),
            ("deny", Fail, Defer, "no"),
            ("defer account on hold", Ok, Accept, "account on hold"),
            ("defer account on hold", Fail, Defer, "account on hold"),
            ("defer yes", Ok, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer TRUE", Ok, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer  1 ", Fail, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer No", Fail, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer false", Ok, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer 0", Ok, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer", Ok, Accept, AUTH_DEFER_PLAIN_ANSWER),
            ("defer yesterday", Ok, Accept, "yesterday"),
            ("error missing ip", Ok, Accept, "yes"),
            ("error missing ip", Fail, Accept, "no"),
            ("error missing ip", Ok, Defer, AUTH_UNAVAILABLE),
            ("pong", Ok, Accept, "yes"),
            ("pong", Fail, Defer, AUTH_UNAVAILABLE),
            ("what", Ok, Accept, "yes"),
            ("what", Ok, Defer, AUTH_UNAVAILABLE),
        ];
        for (line, local, on_error, want) in table {
            let got = parse_reply(line)
                .and_then(|r| auth_answer(r, *local))
                .unwrap_or_else(|| auth_fallback(Some(*local), *on_error).to_string());
            assert_eq!(got, *want, "{line:?} {local:?} {on_error:?}");
        }
    }

    #[test]
    fn fallbacks_follow_on_error() {
        assert_eq!(check_fallback(Accept), "accept");
        assert!(check_fallback(Defer).starts_with("defer "));
        assert_eq!(
            auth_fallback(None, Accept),
            "no",
            "never yes without a local ok"
        );
        assert_eq!(auth_fallback(None, Defer), AUTH_UNAVAILABLE);
        for text in [AUTH_UNAVAILABLE, AUTH_DEFER_PLAIN_ANSWER] {
            assert!(!reads_as_plain_answer(text));
        }
    }

    #[test]
    fn control_characters_are_cleaned() {
        assert_eq!(clean_line("defer a\rb\tc\x1b"), "defer a b c ");
        assert_eq!(clean_line("deny ünïcödé"), "deny ünïcödé");
    }
}
