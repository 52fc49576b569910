//! SMTP dialogues for `exim -bh` and the replies Exim gives to them.
//!
//! A [`Dialogue`] is the client side of a session, line by line, each line with a short
//! label (`EHLO`, `AUTH`, `MAIL`, `RCPT`, `DATA`, ...). [`pair_replies`] matches Exim's
//! stdout against it: in SMTP every client line gets exactly one reply, except the
//! message lines after a `354`, which get none until the final `.`. That rule holds
//! even when Exim rejects something halfway (a refused DATA makes the message lines
//! commands, each answered with a 500), so a test can ask "what did the third RCPT
//! get" without knowing in advance how the session went.

use std::fmt;

/// One SMTP reply, possibly multi-line (`250-...` lines then `250 ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines' text joined by newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Whether the code is 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Whether the code is 4xx (a temporary failure, e.g. a `defer` verdict).
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Whether the code is 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// Splits `line` into code, whether it is the last line of its reply, and text, when it
/// is a reply line (`NNN text`, `NNN-text` or `NNN`).
fn reply_line(line: &str) -> Option<(u16, bool, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    match bytes.get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// Collects whole replies from lines of server output, skipping everything that is not
/// a reply line (the `**** SMTP testing` notes of `-bh`, blank lines).
#[derive(Default)]
pub struct ReplyParser {
    pending: Option<Reply>,
}

impl ReplyParser {
    /// Feeds one line (without its line ending); returns a reply when it completes one.
    pub fn push(&mut self, line: &str) -> Option<Reply> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (code, last, text) = reply_line(line)?;
        let mut reply = self.pending.take().unwrap_or(Reply {
            code,
            lines: Vec::new(),
        });
        reply.lines.push(text.to_string());
        if last {
            Some(reply)
        } else {
            self.pending = Some(reply);
            None
        }
    }
}

/// Every reply in `output`, in order.
pub fn parse_replies(output: &str) -> Vec<Reply> {
    let mut parser = ReplyParser::default();
    output.lines().filter_map(|l| parser.push(l)).collect()
}

/// One client line of a dialogue.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the line is: `EHLO`, `AUTH`, `AUTH-USER`, `AUTH-PASS`, `MAIL`, `RCPT`,
    /// `DATA`, `BODY` (message lines, answered only by the final one), `RSET`, `QUIT`, or
    /// `RAW`.
    pub label: &'static str,
    /// The bytes sent, without CRLF.
    pub line: Vec<u8>,
}

/// The client side of an SMTP session, built command by command.
///
/// ```
/// use exim_access_e2e::Dialogue;
/// let d = Dialogue::new()
///     .ehlo("client.example")
///     .auth_plain("alice", "s3cret")
///     .mail_from("alice@example.org")
///     .rcpt_to("bob@example.net")
///     .quit();
/// assert!(d.to_bytes().ends_with(b"QUIT\r\n"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Dialogue {
    steps: Vec<Step>,
}

impl Dialogue {
    /// An empty dialogue.
    pub fn new() -> Dialogue {
        Dialogue::default()
    }

    /// Appends a line with a label.
    pub fn line(mut self, label: &'static str, line: impl Into<Vec<u8>>) -> Dialogue {
        self.steps.push(Step {
            label,
            line: line.into(),
        });
        self
    }

    /// `EHLO name`.
    pub fn ehlo(self, name: &str) -> Dialogue {
        self.line("EHLO", format!("EHLO {name}"))
    }

    /// A session that only authenticates with PLAIN: EHLO, AUTH, QUIT.
    pub fn auth_only(user: impl AsRef<[u8]>, password: impl AsRef<[u8]>) -> Dialogue {
        Dialogue::new()
            .ehlo("client.example")
            .auth_plain(user, password)
            .quit()
    }

    /// `AUTH PLAIN base64(\0user\0password)`: any bytes but NUL in either.
    pub fn auth_plain(self, user: impl AsRef<[u8]>, password: impl AsRef<[u8]>) -> Dialogue {
        let mut blob = vec![0u8];
        blob.extend_from_slice(user.as_ref());
        blob.push(0);
        blob.extend_from_slice(password.as_ref());
        self.line("AUTH", format!("AUTH PLAIN {}", base64(&blob)))
    }

    /// `AUTH LOGIN`, then the user and the password, each base64-encoded on its own line.
    pub fn auth_login(self, user: impl AsRef<[u8]>, password: impl AsRef<[u8]>) -> Dialogue {
        self.line("AUTH", "AUTH LOGIN")
            .line("AUTH-USER", base64(user.as_ref()))
            .line("AUTH-PASS", base64(password.as_ref()))
    }

    /// `MAIL FROM:<address>`.
    pub fn mail_from(self, address: &str) -> Dialogue {
        self.line("MAIL", format!("MAIL FROM:<{address}>"))
    }

    /// `RCPT TO:<address>`.
    pub fn rcpt_to(self, address: &str) -> Dialogue {
        self.line("RCPT", format!("RCPT TO:<{address}>"))
    }

    /// `DATA`, a short message with `subject`, and the final `.`.
    pub fn data(self, subject: &str) -> Dialogue {
        self.line("DATA", "DATA")
            .line("BODY", format!("Subject: {subject}"))
            .line("BODY", "")
            .line("BODY", "A test message of exim-access.")
            .line("BODY", ".")
    }

    /// `RSET`.
    pub fn rset(self) -> Dialogue {
        self.line("RSET", "RSET")
    }

    /// `QUIT`.
    pub fn quit(self) -> Dialogue {
        self.line("QUIT", "QUIT")
    }

    /// The lines so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The whole client input: every line followed by CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for step in &self.steps {
            bytes.extend_from_slice(&step.line);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes
    }
}

/// A client line and the reply Exim gave to it (`None` when it gave none: the line was
/// part of a message, or the connection had been closed).
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The client line.
    pub step: Step,
    /// Exim's reply.
    pub reply: Option<Reply>,
}

/// Pairs `replies` (greeting first) with the lines of `dialogue`; returns the greeting
/// and one exchange per line.
pub fn pair_replies(dialogue: &Dialogue, replies: Vec<Reply>) -> (Option<Reply>, Vec<Exchange>) {
    let mut replies = replies.into_iter();
    let greeting = replies.next();
    let mut in_message = false;
    let mut exchanges = Vec::new();
    for step in dialogue.steps() {
        let reply = if in_message && step.line != b"." {
            None
        } else {
            let reply = replies.next();
            in_message = reply.as_ref().is_some_and(|r| r.code == 354);
            reply
        };
        exchanges.push(Exchange {
            step: step.clone(),
            reply,
        });
    }
    (greeting, exchanges)
}

/// Standard base64 (RFC 4648, with padding), as SMTP AUTH uses it.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(b"\0alice\0s3cret"), "AGFsaWNlAHMzY3JldA==");
    }

    #[test]
    fn replies_are_grouped_and_notes_skipped() {
        let out = "\n**** SMTP testing session\n220 host ESMTP\n250-host Hello\n250-SIZE\n250 HELP\n451 held\n";
        let replies = parse_replies(out);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[1].code, 250);
        assert_eq!(replies[1].lines, ["host Hello", "SIZE", "HELP"]);
        assert_eq!(replies[2].to_string(), "451 held");
    }

    #[test]
    fn message_lines_get_no_reply_after_354_but_do_after_a_refused_data() {
        let d = Dialogue::new().ehlo("c").data("s").quit();
        let accepted = parse_replies("220 x\n250 hi\n354 go\n250 OK id=1\n221 bye\n");
        let (_, ex) = pair_replies(&d, accepted);
        let codes: Vec<_> = ex
            .iter()
            .map(|e| e.reply.as_ref().map(|r| r.code))
            .collect();
        assert_eq!(
            codes,
            [Some(250), Some(354), None, None, None, Some(250), Some(221)]
        );

        let refused = parse_replies("220 x\n250 hi\n503 no\n500 a\n500 b\n500 c\n500 d\n221 bye\n");
        let (_, ex) = pair_replies(&d, refused);
        assert!(ex.iter().all(|e| e.reply.is_some()));
    }
}
