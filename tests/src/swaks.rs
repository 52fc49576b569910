//! swaks, a real SMTP client, against the test's Exim daemon.
//!
//! [`Swaks`] builds the command line; [`SwaksRun`] keeps swaks's transcript and pairs
//! each client line (`" -> "`) with the server reply that followed it (`"<-  "`, or
//! `"<** "` for a reply swaks considers an error).

use std::process::Command;
use std::time::Duration;

use crate::paths;
use crate::process::{self, Finished};
use crate::smtp::{Reply, ReplyParser};

/// A swaks command line aimed at `127.0.0.1:<port>`.
#[derive(Clone, Debug)]
pub struct Swaks {
    args: Vec<String>,
}

impl Swaks {
    /// swaks to `127.0.0.1:port`, greeting as `client.example`, 30 s timeout per step.
    pub fn new(port: u16) -> Swaks {
        Swaks {
            args: vec![
                "--server".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--helo".into(),
                "client.example".into(),
                "--timeout".into(),
                "30".into(),
            ],
        }
    }

    /// Adds raw arguments.
    pub fn args(mut self, args: &[&str]) -> Swaks {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `--auth PLAIN --auth-user user --auth-password password`.
    pub fn auth_plain(self, user: &str, password: &str) -> Swaks {
        self.args(&[
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
        ])
    }

    /// `--auth LOGIN --auth-user user --auth-password password`.
    pub fn auth_login(self, user: &str, password: &str) -> Swaks {
        self.args(&[
            "--auth",
            "LOGIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
        ])
    }

    /// `--from address`.
    pub fn from(self, address: &str) -> Swaks {
        self.args(&["--from", address])
    }

    /// `--to a,b,c`.
    pub fn to(self, addresses: &[&str]) -> Swaks {
        let list = addresses.join(",");
        self.args(&["--to", &list])
    }

    /// `--quit-after stage` (`CONNECT`, `EHLO`, `AUTH`, `MAIL`, `RCPT`, ...).
    pub fn quit_after(self, stage: &str) -> Swaks {
        self.args(&["--quit-after", stage])
    }

    /// Runs swaks (at most 120 s) and parses its transcript.
    pub fn run(&self) -> SwaksRun {
        let mut cmd = Command::new(paths::swaks_bin());
        cmd.args(&self.args);
        let finished = process::run(cmd, b"", Duration::from_secs(120));
        let exchanges = parse_transcript(&finished.stdout_text());
        SwaksRun {
            finished,
            exchanges,
        }
    }
}

/// A finished swaks run.
#[derive(Debug)]
pub struct SwaksRun {
    /// The swaks process (its stdout is the transcript).
    pub finished: Finished,
    /// Each client line with the reply that followed it (the greeting has the client
    /// line `""`).
    pub exchanges: Vec<(String, Option<Reply>)>,
}

impl SwaksRun {
    /// The reply to the first client line starting with `prefix` (e.g. `"AUTH"`,
    /// `"RCPT TO:<b@"`); panics with the transcript when there is none.
    pub fn reply_to(&self, prefix: &str) -> &Reply {
        self.exchanges
            .iter()
            .find(|(line, reply)| line.starts_with(prefix) && reply.is_some())
            .and_then(|(_, reply)| reply.as_ref())
            .unwrap_or_else(|| {
                panic!(
                    "no reply to {prefix:?} in the swaks transcript:\n{}{}",
                    self.finished.stdout_text(),
                    self.finished.stderr_text()
                )
            })
    }

    /// The replies to every client line starting with `prefix`.
    pub fn replies_to(&self, prefix: &str) -> Vec<&Reply> {
        self.exchanges
            .iter()
            .filter(|(line, _)| line.starts_with(prefix))
            .filter_map(|(_, reply)| reply.as_ref())
            .collect()
    }

    /// The transcript, for messages.
    pub fn transcript(&self) -> String {
        format!(
            "{}{}",
            self.finished.stdout_text(),
            self.finished.stderr_text()
        )
    }
}

/// Pairs swaks's client lines with the server replies that follow them.
fn parse_transcript(text: &str) -> Vec<(String, Option<Reply>)> {
    let mut exchanges: Vec<(String, Option<Reply>)> = vec![(String::new(), None)];
    let mut parser = ReplyParser::default();
    for line in text.lines() {
        if let Some(client) = line.strip_prefix(" -> ") {
            exchanges.push((client.to_string(), None));
        } else if let Some(server) = line
            .strip_prefix("<-  ")
            .or_else(|| line.strip_prefix("<** "))
        {
            if let Some(reply) = parser.push(server) {
                if let Some(last) = exchanges.last_mut() {
                    last.1 = Some(reply);
                }
            }
        }
    }
    exchanges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_pairs_lines_with_replies() {
        let text = "=== Trying 127.0.0.1:2626...\n<-  220 vm ESMTP\n -> EHLO vm\n<-  250-vm Hello\n<-  250 HELP\n -> AUTH PLAIN AGJvYgBzM2NyZXQ=\n<** 535 Incorrect authentication data\n*** No authentication type succeeded\n -> QUIT\n<-  221 bye\n";
        let ex = parse_transcript(text);
        assert_eq!(ex[0].1.as_ref().map(|r| r.code), Some(220));
        assert_eq!(ex[1].0, "EHLO vm");
        assert_eq!(ex[1].1.as_ref().map(|r| r.lines.len()), Some(2));
        assert_eq!(ex[2].1.as_ref().map(|r| r.code), Some(535));
        assert_eq!(ex[3].1.as_ref().map(|r| r.code), Some(221));
    }
}
