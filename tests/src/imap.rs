//! A minimal IMAP4rev1 client over a blocking `TcpStream`, for the Dovecot tests.
//!
//! Enough to log in as a real client does and to leave traces in Dovecot's log: tagged
//! commands, untagged responses (with server literals `{N}` read in full), `ID` with
//! `x-originating-ip` (Dovecot believes it from a trusted network), `LOGIN` with quoted
//! strings, `APPEND` with a non-synchronising literal (`LITERAL+`, which Dovecot
//! offers), `LOGOUT`. Every read and write has a 30 s timeout, so a silent server fails
//! the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The bound on one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The completion of one command: the untagged responses before it and its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapResponse {
    /// Untagged responses (`* ...`), without the CRLF; literals inline.
    pub untagged: Vec<String>,
    /// `OK`, `NO` or `BAD`.
    pub status: String,
    /// The text after the status (with a response code such as `[AUTHENTICATIONFAILED]`).
    pub text: String,
}

impl ImapResponse {
    /// Whether the command completed with `OK`.
    pub fn is_ok(&self) -> bool {
        self.status == "OK"
    }
}

/// One IMAP connection.
pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    greeting: String,
    /// Every line sent and received, for assertion messages.
    transcript: String,
}

impl Imap {
    /// Connects to 127.0.0.1:`port` and reads the greeting; panics unless it is `* OK`.
    pub fn connect(port: u16) -> Imap {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to IMAP on port {port}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let writer = stream.try_clone().expect("clone the IMAP stream");
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
            greeting: String::new(),
            transcript: String::new(),
        };
        imap.greeting = imap.read_response_line();
        assert!(
            imap.greeting.starts_with("* OK"),
            "IMAP greeting: {:?}",
            imap.greeting
        );
        imap
    }

    /// The server's greeting line.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// What was sent (`C:`) and received (`S:`) so far.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// Sends `command` with the next tag and reads up to its tagged completion.
    pub fn command(&mut self, command: &str) -> ImapResponse {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.complete(&tag)
    }

    /// `ID ("x-originating-ip" IP "x-originating-port" PORT "name" "exim-access-e2e")`:
    /// from a trusted network, Dovecot logs `IP` as the client's address (`rip=`) and
    /// the auth process sees it.
    pub fn id_originating(&mut self, ip: &str, port: u16) -> ImapResponse {
        let reply = self.command(&format!(
            "ID (\"x-originating-ip\" {} \"x-originating-port\" \"{port}\" \"name\" \"exim-access-e2e\")",
            quote(ip)
        ));
        assert!(reply.is_ok(), "ID refused: {reply:?}\n{}", self.transcript);
        reply
    }

    /// `LOGIN user password` (quoted strings).
    pub fn login(&mut self, user: &str, password: &str) -> ImapResponse {
        self.command(&format!("LOGIN {} {}", quote(user), quote(password)))
    }

    /// `APPEND mailbox {N+}` and the message: stores `message` (CRLF line ends).
    pub fn append(&mut self, mailbox: &str, message: &[u8]) -> ImapResponse {
        let tag = self.tag();
        let mut bytes =
            format!("{tag} APPEND {} {{{}+}}\r\n", quote(mailbox), message.len()).into_bytes();
        bytes.extend_from_slice(message);
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes);
        self.complete(&tag)
    }

    /// `LOGOUT`, then closes the connection.
    pub fn logout(mut self) -> ImapResponse {
        self.command("LOGOUT")
    }

    fn tag(&mut self) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    fn send(&mut self, bytes: &[u8]) {
        self.transcript
            .push_str(&format!("C: {}", String::from_utf8_lossy(bytes)));
        if let Err(e) = self
            .writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
        {
            panic!("IMAP write failed: {e}\n{}", self.transcript);
        }
    }

    /// Reads responses until the one tagged `tag`.
    fn complete(&mut self, tag: &str) -> ImapResponse {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_response_line();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
                return ImapResponse {
                    untagged,
                    status: status.to_string(),
                    text: text.to_string(),
                };
            }
            untagged.push(line);
        }
    }

    /// One response line without its CRLF, with any literals (`{N}` at a line's end
    /// followed by N bytes) read in and kept inline.
    fn read_response_line(&mut self) -> String {
        let mut whole = Vec::new();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => panic!("IMAP server closed the connection\n{}", self.transcript),
                Ok(_) => {}
                Err(e) => panic!("IMAP read failed: {e}\n{}", self.transcript),
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            whole.extend_from_slice(&line);
            let Some(size) = literal_size(&line) else {
                break;
            };
            let mut literal = vec![0; size];
            if let Err(e) = self.reader.read_exact(&mut literal) {
                panic!("IMAP literal of {size} bytes: {e}\n{}", self.transcript);
            }
            whole.extend_from_slice(b"\r\n");
            whole.extend_from_slice(&literal);
        }
        let text = String::from_utf8_lossy(&whole).into_owned();
        self.transcript.push_str(&format!("S: {text}\n"));
        text
    }
}

/// The size of the literal announced at the end of `line` (`... {123}`).
fn literal_size(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&inner[open + 1..]).ok()?.parse().ok()
}

/// An IMAP quoted string (`"` and `\` escaped).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_sizes_and_quoting() {
        assert_eq!(literal_size(b"* 1 FETCH (BODY[] {42}"), Some(42));
        assert_eq!(literal_size(b"* OK done"), None);
        assert_eq!(literal_size(b"* 1 FETCH {x}"), None);
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
