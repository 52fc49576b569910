//! Passwords cut out of log lines before the oracle stores or prints one.
//!
//! Logs are not supposed to hold passwords, but some settings and some clients put them
//! there, and a line the parsers do not know goes whole into the dead-letter file (and
//! `parse --dead-letters`), which is kept and read by people. [`redact`] removes every
//! shape known to carry one; [`before_password`] is the part of a message a parser may
//! keep as an event's text. What is cut goes to the end of the line: a password may
//! hold `)`, spaces or quotes, so nothing after its start is trusted.
//!
//! Shapes (Dovecot 2.3 and 2.4, Exim 4.96):
//!
//! | where | shape |
//! |---|---|
//! | Dovecot `auth_verbose_passwords = plain` (or `yes`, `plain:N`) | `Password mismatch (given password: …)`, `unknown user (given password: …)`, `invalid credentials (given password: …)`, `pam_authenticate() failed: … (given password: …)`, after any other wording of a failed login |
//! | Dovecot `auth_verbose_passwords = sha1` | `(SHA1 of given password: …)` |
//! | Dovecot `auth_debug_passwords = yes` | `SCHEME(password) != 'stored'`, `client in: AUTH … resp=<base64>`, `client in: CONT <id> <base64>` |
//! | Exim synchronization and protocol errors | `input="AUTH PLAIN <base64>"`, `rejected "AUTH LOGIN\r\n<base64>…"` |
//! | custom formats, expansion errors | `password=…`, `passwd=…` |

use std::borrow::Cow;

/// What replaces a password.
pub const REDACTED: &[u8] = b"[redacted]";

/// SASL mechanisms whose `AUTH` command line can carry credentials.
const MECHANISMS: &[&[u8]] = &[
    b"PLAIN",
    b"LOGIN",
    b"CRAM-MD5",
    b"DIGEST-MD5",
    b"XOAUTH2",
    b"XOAUTH",
    b"OAUTHBEARER",
    b"SCRAM-SHA-1",
    b"SCRAM-SHA-1-PLUS",
    b"SCRAM-SHA-256",
    b"SCRAM-SHA-256-PLUS",
    b"NTLM",
    b"GSSAPI",
    b"EXTERNAL",
    b"ANONYMOUS",
    b"OTP",
    b"APOP",
];

/// Case-insensitive search for an ASCII `needle`.
fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Where the first password in `line` starts (the byte after which everything is cut),
/// with what to keep before the redaction mark; `None` when the line holds none.
fn first_cut(line: &[u8]) -> Option<usize> {
    let mut cut: Option<usize> = None;
    let mut at = |pos: usize| cut = Some(cut.map_or(pos, |c| c.min(pos)));
    // Dovecot's auth_verbose_passwords: "(given password: x)", "(SHA1 of given password: x)".
    if let Some(i) = find_ci(line, b"given password", 0) {
        let mut end = i + b"given password".len();
        if line.get(end) == Some(&b':') {
            end += 1;
        }
        if line.get(end) == Some(&b' ') {
            end += 1;
        }
        at(end);
    }
    // auth_debug_passwords: "SCHEME(plain) != 'stored'": cut after the passdb prefix.
    if let Some(q) = memchr::memmem::find(line, b") != '") {
        let prefix_end = memchr::memmem::find(&line[..q], b"): ").map(|p| p + 3);
        at(prefix_end.unwrap_or(0));
    }
    // auth debug "client in:" lines: "resp=<base64>" and "CONT\t<id>\t<base64>".
    if let Some(i) = find_ci(line, b"resp=", 0)
        && (i == 0 || matches!(line[i - 1], b'\t' | b' '))
    {
        at(i + b"resp=".len());
    }
    if let Some(i) = memchr::memmem::find(line, b"client in: CONT\t") {
        let id_start = i + b"client in: CONT\t".len();
        let id_end =
            memchr::memchr(b'\t', &line[id_start..]).map_or(line.len(), |e| id_start + e + 1);
        at(id_end);
    }
    // password=..., passwd=... in key=value text.
    for key in [&b"password="[..], b"passwd="] {
        let mut from = 0;
        while let Some(i) = find_ci(line, key, from) {
            if i == 0 || !line[i - 1].is_ascii_alphanumeric() {
                at(i + key.len());
                break;
            }
            from = i + 1;
        }
    }
    // An SMTP AUTH command with an initial response or further lines (Exim's input="...").
    let mut from = 0;
    while let Some(i) = find_ci(line, b"auth ", from) {
        from = i + 1;
        if i > 0 && line[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mech_start = i + 5;
        let Some(mech) = MECHANISMS
            .iter()
            .filter(|m| {
                line.len() >= mech_start + m.len()
                    && line[mech_start..mech_start + m.len()].eq_ignore_ascii_case(m)
                    && line
                        .get(mech_start + m.len())
                        .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
            })
            .max_by_key(|m| m.len())
        else {
            continue;
        };
        let after = mech_start + mech.len();
        match line.get(after) {
            None | Some(b'"') | Some(b'\n') | Some(b'\r') => {}
            Some(_) => at(after),
        }
    }
    cut
}

/// `line` with every password cut out (from its start to the end of the line, replaced
/// by `[redacted]`); borrowed unchanged when there is none. A final newline is kept.
pub fn redact(line: &[u8]) -> Cow<'_, [u8]> {
    let Some(cut) = first_cut(line) else {
        return Cow::Borrowed(line);
    };
    let mut out = Vec::with_capacity(cut + REDACTED.len() + 1);
    out.extend_from_slice(&line[..cut]);
    out.extend_from_slice(REDACTED);
    if line.ends_with(b"\n") {
        out.push(b'\n');
    }
    Cow::Owned(out)
}

/// The part of a log message before any password, its trailing spaces and an opening
/// `(` trimmed: what a parser may keep as an event's text.
pub fn before_password(msg: &[u8]) -> &[u8] {
    let Some(cut) = first_cut(msg) else {
        return msg;
    };
    let mut kept = &msg[..cut];
    // Drop the marker itself ("(given password: ", "(SHA1 of given password: ").
    if let Some(i) = find_ci(kept, b"given password", 0) {
        kept = &kept[..i];
        if let Some(j) = find_ci(kept, b"(sha1 of ", 0) {
            kept = &kept[..j];
        }
    }
    while let [rest @ .., last] = kept {
        if matches!(last, b' ' | b'(') {
            kept = rest;
        } else {
            break;
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "S3cr)et pass(word";

    fn r(line: &str) -> String {
        String::from_utf8(redact(line.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn every_known_wording_loses_its_password() {
        let lines = [
            format!(
                "Nov  3 10:00:00 mx dovecot: auth: Info: passwd-file(alice,192.0.2.1,<sess>): Password mismatch (given password: {SECRET})"
            ),
            format!(
                "Nov  3 10:00:00 mx dovecot: auth: Info: sql(bob,192.0.2.1): unknown user (given password: {SECRET})"
            ),
            "Nov  3 10:00:00 mx dovecot: auth: Info: sql(bob,192.0.2.1): Password mismatch (SHA1 of given password: 5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8)".to_string(),
            format!(
                "2026-11-03 10:00:00 auth: Info: ldap(carol,192.0.2.1): invalid credentials (given password: {SECRET})"
            ),
            format!(
                "auth: Info: pam(dave,192.0.2.1): pam_authenticate() failed: Authentication failure (password mismatch?) (given password: {SECRET})"
            ),
            format!(
                "auth: Info: checkpassword(erin,192.0.2.1): Login failed for some new reason (Given Password: {SECRET})"
            ),
            format!(
                "auth: Debug: sql(frank,192.0.2.1,<x>): SHA512-CRYPT({SECRET}) != '$6$abc$def'"
            ),
            "auth: Debug: client in: AUTH\t1\tPLAIN\tservice=imap\tlip=127.0.0.1\trip=192.0.2.1\tresp=AGFsaWNlAFMzY3IpZXQ=".to_string(),
            "auth: Debug: client in: CONT\t7\tUzNjcilldCBwYXNzKHdvcmQ=".to_string(),
            "2026-11-03 10:00:00 SMTP protocol synchronization error (input sent without waiting for greeting): rejected connection from H=[192.0.2.1] input=\"AUTH PLAIN AGFsaWNlAFMzY3IpZXQ=\\r\\n\"".to_string(),
            "2026-11-03 10:00:00 SMTP protocol synchronization error (next input sent too soon: pipelining was not advertised): rejected \"auth login\\r\\nYWxpY2U=\\r\\nUzNjcilldA==\" H=[192.0.2.1]".to_string(),
            format!("custom: user=alice password={SECRET} ip=192.0.2.1"),
        ];
        for line in &lines {
            let out = r(line);
            assert!(out.ends_with("[redacted]"), "{out}");
            for secret in [
                SECRET, "S3cr", "5baa61e4", "AGFsaWNl", "UzNjcill", "YWxpY2U=",
            ] {
                assert!(!out.contains(secret), "{secret} left in {out}");
            }
        }
        assert!(r(&lines[0]).ends_with("Password mismatch (given password: [redacted]"));
        assert!(r(&lines[6]).ends_with("sql(frank,192.0.2.1,<x>): [redacted]"));
    }

    #[test]
    fn lines_without_a_password_are_left_alone() {
        for line in [
            "auth: Info: passwd-file(alice,192.0.2.1): Password mismatch",
            "imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>, method=PLAIN",
            "2026-11-03 10:00:00 PLAIN authenticator failed for (x) [192.0.2.1]:5000: 535 Incorrect authentication data (set_id=alice)",
            "rejected \"AUTH PLAIN\" H=[192.0.2.1]",
            "oauth login by alice, nopassword=1",
        ] {
            assert!(
                matches!(redact(line.as_bytes()), Cow::Borrowed(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn event_text_stops_before_the_password() {
        assert_eq!(
            before_password(format!("invalid credentials (given password: {SECRET})").as_bytes()),
            b"invalid credentials"
        );
        assert_eq!(
            before_password(
                b"Authentication failure (password mismatch?) (SHA1 of given password: 5baa)"
            ),
            b"Authentication failure (password mismatch?)"
        );
        assert_eq!(before_password(b"Password mismatch"), b"Password mismatch");
    }
}
