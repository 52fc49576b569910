//! The other half of the protocol: the verbs a request may name and the one reply line
//! the oracle answers with, shared so that the library and the oracle cannot disagree.
//!
//! ```text
//! accept [text]
//! defer <text for the SMTP client>
//! deny <text for the SMTP client>
//! error <what was wrong with the request>
//! pong
//! ```

/// The protocol's verbs, as written on the wire (any letter case is accepted).
pub const VERBS: [&str; 7] = ["auth", "mail", "rcpt", "data", "connect", "login", "ping"];

/// A reply line, split into its verdict and text (borrowed from the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `accept [text]`: go ahead.
    Accept(&'a str),
    /// `defer <text>`: a temporary refusal.
    Defer(&'a str),
    /// `deny <text>`: a permanent refusal.
    Deny(&'a str),
    /// `error <what>`: the request was malformed.
    Error(&'a str),
    /// `pong`: the answer to `ping`.
    Pong,
}

impl<'a> Reply<'a> {
    /// Splits a reply line (without its newline); `None` for a word that is no verdict.
    pub fn parse(line: &'a str) -> Option<Reply<'a>> {
        let (word, text) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "accept" => Some(Reply::Accept(text)),
            "defer" => Some(Reply::Defer(text)),
            "deny" => Some(Reply::Deny(text)),
            "error" => Some(Reply::Error(text)),
            "pong" if text.is_empty() => Some(Reply::Pong),
            _ => None,
        }
    }

    /// The verdict word.
    pub fn word(&self) -> &'static str {
        match self {
            Reply::Accept(_) => "accept",
            Reply::Defer(_) => "defer",
            Reply::Deny(_) => "deny",
            Reply::Error(_) => "error",
            Reply::Pong => "pong",
        }
    }

    /// Appends the reply line and its newline to `out`. The text is kept to one line
    /// (every control character becomes a space), and left out when empty.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.word().as_bytes());
        let text = match self {
            Reply::Accept(t) | Reply::Defer(t) | Reply::Deny(t) | Reply::Error(t) => t,
            Reply::Pong => "",
        };
        if !text.is_empty() {
            out.push(b' ');
            out.extend(
                text.bytes()
                    .map(|b| if b.is_ascii_control() { b' ' } else { b }),
            );
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_reads_back_as_written() {
        for reply in [
            Reply::Accept(""),
            Reply::Accept("ok"),
            Reply::Defer("account held"),
            Reply::Deny("go away"),
            Reply::Error("auth: missing required key ip"),
            Reply::Pong,
        ] {
            let mut line = Vec::new();
            reply.write(&mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&line[..line.len() - 1]).unwrap();
            assert_eq!(Reply::parse(text), Some(reply), "{text:?}");
        }
        let mut line = Vec::new();
        Reply::Defer("two\nlines\r").write(&mut line);
        assert_eq!(line, b"defer two lines \n");
        assert_eq!(Reply::parse("hold on"), None);
        assert_eq!(Reply::parse("pong extra"), None);
    }
}
