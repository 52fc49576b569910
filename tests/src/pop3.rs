//! A minimal POP3 client over a blocking `TcpStream`, for the Dovecot tests.
//!
//! `USER` / `PASS`, `STAT`, `RETR` (multi-line, dot-unstuffed), `QUIT`, and Dovecot's
//! `XCLIENT ADDR=.. PORT=..`: from a trusted network it replaces the client's address
//! before login, as a proxy would, so a loopback client can log in "from" any address.
//! Every read and write has a 30 s timeout.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The bound on one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One POP3 connection.
pub struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    greeting: String,
    transcript: String,
}

impl Pop3 {
    /// Connects to 127.0.0.1:`port` and reads the greeting; panics unless it is `+OK`.
    pub fn connect(port: u16) -> Pop3 {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to POP3 on port {port}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let writer = stream.try_clone().expect("clone the POP3 stream");
        let mut pop3 = Pop3 {
            reader: BufReader::new(stream),
            writer,
            greeting: String::new(),
            transcript: String::new(),
        };
        pop3.greeting = pop3.read_line();
        assert!(
            pop3.greeting.starts_with("+OK"),
            "POP3 greeting: {:?}",
            pop3.greeting
        );
        pop3
    }

    /// The server's greeting line (Dovecot adds `[XCLIENT]` for trusted clients).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// What was sent (`C:`) and received (`S:`) so far.
    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// Sends one command line and returns the status line (`+OK ...` / `-ERR ...`).
    pub fn command(&mut self, line: &str) -> String {
        let bytes = format!("{line}\r\n");
        self.transcript.push_str(&format!("C: {bytes}"));
        if let Err(e) = self
            .writer
            .write_all(bytes.as_bytes())
            .and_then(|()| self.writer.flush())
        {
            panic!("POP3 write failed: {e}\n{}", self.transcript);
        }
        self.read_line()
    }

    /// `XCLIENT ADDR=ip PORT=port`; panics unless Dovecot accepts it.
    pub fn xclient(&mut self, ip: &str, port: u16) -> String {
        let reply = self.command(&format!("XCLIENT ADDR={ip} PORT={port}"));
        assert!(
            reply.starts_with("+OK"),
            "XCLIENT refused: {reply}\n{}",
            self.transcript
        );
        reply
    }

    /// `USER` then `PASS`; returns the reply to `PASS` (`+OK Logged in.` on success).
    pub fn login(&mut self, user: &str, password: &str) -> String {
        let reply = self.command(&format!("USER {user}"));
        assert!(
            reply.starts_with("+OK"),
            "USER refused: {reply}\n{}",
            self.transcript
        );
        self.command(&format!("PASS {password}"))
    }

    /// `RETR n`: the message's bytes (CRLF line ends, dot-unstuffed); panics on `-ERR`.
    pub fn retr(&mut self, n: u32) -> Vec<u8> {
        let status = self.command(&format!("RETR {n}"));
        assert!(
            status.starts_with("+OK"),
            "RETR {n}: {status}\n{}",
            self.transcript
        );
        let mut message = Vec::new();
        loop {
            let line = self.read_line();
            if line == "." {
                break;
            }
            let line = line.strip_prefix('.').unwrap_or(&line);
            message.extend_from_slice(line.as_bytes());
            message.extend_from_slice(b"\r\n");
        }
        message
    }

    /// `QUIT`; returns the reply.
    pub fn quit(mut self) -> String {
        self.command("QUIT")
    }

    /// One line without its CRLF.
    fn read_line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("POP3 server closed the connection\n{}", self.transcript),
            Ok(_) => {}
            Err(e) => panic!("POP3 read failed: {e}\n{}", self.transcript),
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        self.transcript.push_str(&format!("S: {line}\n"));
        line
    }
}
