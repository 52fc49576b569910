//! The connection to the oracle: one blocking round trip per call, bounded as a whole by a
//! deadline, on a Unix socket kept open for the life of the Exim process.
//!
//! * One connection per process, reused across calls. A connection inherited through
//!   `fork` (Exim forks delivery processes from the receiving one) is never used: the
//!   child opens its own, so that two processes never read each other's replies.
//! * A reused connection that turns out to be dead (the oracle restarted: the write fails,
//!   or the read sees end of file before any byte of a reply) is replaced once, within the
//!   same deadline. A fresh connection is never retried. (If the oracle died after
//!   reading the request but before answering, it may see that request twice.)
//! * `timeout` bounds connect + write + read together: each step gets the time that is
//!   left. The connect is bounded too (a listener whose backlog is full would otherwise
//!   block it forever).
//! * Writes use `send(MSG_NOSIGNAL)`: a SIGPIPE would kill the Exim process.
//! * The reply is one line of at most [`MAX_REPLY_BYTES`] bytes plus `\n`. After a timeout
//!   or any other problem the connection is dropped, so that a late or half-read reply
//!   can never be taken as the answer to the next request.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ffi::{connect_unix, send_nosignal};

/// The longest reply line accepted, in bytes, without its newline.
pub const MAX_REPLY_BYTES: usize = 8192;

/// Why a round trip gave no reply line.
#[derive(Debug)]
pub enum ClientError {
    /// The socket could not be connected.
    Connect(io::Error),
    /// The deadline passed; the step that was running.
    Timeout(&'static str),
    /// Writing the request failed.
    Send(io::Error),
    /// Reading the reply failed.
    Receive(io::Error),
    /// The oracle closed the connection before a whole reply line; whether any of it came.
    Closed {
        /// Whether part of a reply had arrived.
        partial: bool,
    },
    /// The reply was longer than [`MAX_REPLY_BYTES`].
    ReplyTooLong,
    /// The reply was not UTF-8 or held a NUL.
    BadReply,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Timeout(step) => write!(f, "timed out while {step}"),
            ClientError::Send(e) => write!(f, "cannot send the request: {e}"),
            ClientError::Receive(e) => write!(f, "cannot read the reply: {e}"),
            ClientError::Closed { partial: false } => {
                write!(f, "connection closed without a reply")
            }
            ClientError::Closed { partial: true } => {
                write!(f, "connection closed in the middle of a reply")
            }
            ClientError::ReplyTooLong => {
                write!(f, "reply longer than {MAX_REPLY_BYTES} bytes")
            }
            ClientError::BadReply => write!(f, "reply is not utf-8 or holds a nul byte"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// Whether the error shows a connection that died while idle, so that one retry on a
    /// new connection is worth it (nothing of the request was answered).
    fn is_stale_connection(&self) -> bool {
        match self {
            ClientError::Closed { partial } => !partial,
            ClientError::Send(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::NotConnected
            ),
            ClientError::Receive(e) => e.kind() == io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }
}

/// An open connection and what it was opened for.
struct Connection {
    /// The socket.
    stream: UnixStream,
    /// The path it is connected to.
    socket: PathBuf,
    /// The process that opened it.
    pid: u32,
}

/// The process's connection to the oracle, opened on first use.
#[derive(Default)]
pub struct Client {
    /// The open connection, if any.
    connection: Option<Connection>,
}

impl Client {
    /// Sends `request` (one line ending in `\n`) to the oracle at `socket` and returns the
    /// reply line without its line end, all within `timeout`.
    pub fn round_trip(
        &mut self,
        socket: &Path,
        request: &str,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        let deadline = Instant::now() + timeout;
        if let Some(connection) = self.connection.take()
            && connection.socket == socket
            && connection.pid == std::process::id()
        {
            match exchange(&connection.stream, request.as_bytes(), deadline) {
                Ok((reply, reusable)) => {
                    if reusable {
                        self.connection = Some(connection);
                    }
                    return Ok(reply);
                }
                Err(e) if e.is_stale_connection() => {} // Replaced once, below.
                Err(e) => return Err(e),
            }
        }
        let stream = connect(socket, deadline)?;
        let (reply, reusable) = exchange(&stream, request.as_bytes(), deadline)?;
        if reusable {
            self.connection = Some(Connection {
                stream,
                socket: socket.to_path_buf(),
                pid: std::process::id(),
            });
        }
        Ok(reply)
    }

    /// Closes the connection (e.g. when the socket path changes).
    pub fn disconnect(&mut self) {
        self.connection = None;
    }
}

/// The time left before `deadline`, or a timeout error naming `step`.
fn remaining(deadline: Instant, step: &'static str) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ClientError::Timeout(step))
    } else {
        Ok(left)
    }
}

/// Whether an I/O error is a socket timeout (`SO_SNDTIMEO` / `SO_RCVTIMEO` expiring).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Opens a connection to `socket` before `deadline`.
fn connect(socket: &Path, deadline: Instant) -> Result<UnixStream, ClientError> {
    loop {
        let left = remaining(deadline, "connecting")?;
        match connect_unix(socket, left) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A full backlog: the kernel waited as long as it was told to.
            Err(e) if is_timeout(&e) => return Err(ClientError::Timeout("connecting")),
            Err(e) => return Err(ClientError::Connect(e)),
        }
    }
}

/// Writes `request` and reads one reply line, before `deadline`. Also says whether the
/// connection may be reused (no bytes arrived after the reply's newline).
fn exchange(
    stream: &UnixStream,
    request: &[u8],
    deadline: Instant,
) -> Result<(String, bool), ClientError> {
    let mut sent = 0;
    while sent < request.len() {
        let left = remaining(deadline, "sending")?;
        stream
            .set_write_timeout(Some(left))
            .map_err(ClientError::Send)?;
        match send_nosignal(stream, &request[sent..]) {
            Ok(0) => return Err(ClientError::Send(io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ClientError::Timeout("sending")),
            Err(e) => return Err(ClientError::Send(e)),
        }
    }

    let mut reply = Vec::with_capacity(128);
    let mut chunk = [0u8; 1024];
    let newline = loop {
        let left = remaining(deadline, "waiting for the reply")?;
        stream
            .set_read_timeout(Some(left))
            .map_err(ClientError::Receive)?;
        let mut reader = stream;
        match reader.read(&mut chunk) {
            Ok(0) => {
                return Err(ClientError::Closed {
                    partial: !reply.is_empty(),
                });
            }
            Ok(n) => {
                let start = reply.len();
                reply.extend_from_slice(&chunk[..n]);
                if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
                    break start + i;
                }
                if reply.len() > MAX_REPLY_BYTES {
                    return Err(ClientError::ReplyTooLong);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(ClientError::Timeout("waiting for the reply"));
            }
            Err(e) => return Err(ClientError::Receive(e)),
        }
    };
    let reusable = newline + 1 == reply.len();
    reply.truncate(newline);
    if reply.last() == Some(&b'\r') {
        reply.pop();
    }
    if reply.len() > MAX_REPLY_BYTES {
        return Err(ClientError::ReplyTooLong);
    }
    if reply.contains(&0) {
        return Err(ClientError::BadReply);
    }
    let reply = String::from_utf8(reply).map_err(|_| ClientError::BadReply)?;
    Ok((reply, reusable))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::thread;

    /// A fresh socket path in a fresh temporary directory (removed by the caller's drop).
    pub(crate) struct TempSocket {
        /// The directory holding the socket.
        dir: PathBuf,
        /// The socket path.
        pub path: PathBuf,
    }

    impl TempSocket {
        /// A path unique to this test.
        pub(crate) fn new(name: &str) -> Self {
            static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "exim-access-test-{}-{n}-{name}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("o.sock");
            TempSocket { dir, path }
        }
    }

    impl Drop for TempSocket {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// How a test oracle treats each connection.
    #[derive(Clone, Copy)]
    pub(crate) enum Behaviour {
        /// Answers every line with `reply(line)` and keeps the connection open.
        Serve,
        /// Answers one line, then closes the connection.
        OneReplyThenClose,
        /// Reads lines but never answers.
        Silent,
    }

    /// Starts a test oracle on `path`; each request line it reads is sent on the channel.
    pub(crate) fn spawn_oracle(
        path: &Path,
        behaviour: Behaviour,
        reply: fn(&str) -> String,
    ) -> mpsc::Receiver<String> {
        let listener = UnixListener::bind(path).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                thread::spawn(move || serve(stream, behaviour, reply, tx));
            }
        });
        rx
    }

    /// Serves one connection of the test oracle.
    fn serve(
        stream: UnixStream,
        behaviour: Behaviour,
        reply: fn(&str) -> String,
        tx: mpsc::Sender<String>,
    ) {
        let mut writer = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream);
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            let request = line.trim_end_matches('\n').to_string();
            line.clear();
            let answer = reply(&request);
            if tx.send(request).is_err() {
                return;
            }
            match behaviour {
                Behaviour::Silent => continue,
                Behaviour::Serve => {
                    let _ = writer.write_all(format!("{answer}\n").as_bytes());
                }
                Behaviour::OneReplyThenClose => {
                    let _ = writer.write_all(format!("{answer}\n").as_bytes());
                    return;
                }
            }
        }
    }

    /// A reply naming the request, to check that replies match requests.
    pub(crate) fn echo(request: &str) -> String {
        format!("accept {request}")
    }

    const TIMEOUT: Duration = Duration::from_millis(300);
    /// Generous slack for a loaded shared machine: the point is that nothing hangs.
    const SLACK: Duration = Duration::from_secs(3);

    #[test]
    fn replies_come_back_and_the_connection_is_reused() {
        let sock = TempSocket::new("reuse");
        let requests = spawn_oracle(&sock.path, Behaviour::Serve, echo);
        let mut client = Client::default();
        for i in 0..3 {
            let reply = client
                .round_trip(&sock.path, &format!("ping n={i}\n"), SLACK)
                .unwrap();
            assert_eq!(reply, format!("accept ping n={i}"));
            assert_eq!(requests.recv().unwrap(), format!("ping n={i}"));
        }
        assert!(client.connection.is_some());
    }

    #[test]
    fn a_connection_closed_after_each_reply_is_replaced() {
        let sock = TempSocket::new("close");
        let requests = spawn_oracle(&sock.path, Behaviour::OneReplyThenClose, echo);
        let mut client = Client::default();
        for i in 0..4 {
            let reply = client
                .round_trip(&sock.path, &format!("ping n={i}\n"), SLACK)
                .unwrap();
            assert_eq!(reply, format!("accept ping n={i}"));
        }
        let seen: Vec<String> = requests.try_iter().collect();
        assert_eq!(seen, ["ping n=0", "ping n=1", "ping n=2", "ping n=3"]);
    }

    #[test]
    fn a_silent_oracle_times_out_and_the_connection_is_dropped() {
        let sock = TempSocket::new("silent");
        let _requests = spawn_oracle(&sock.path, Behaviour::Silent, echo);
        let mut client = Client::default();
        let started = Instant::now();
        let err = client
            .round_trip(&sock.path, "ping\n", TIMEOUT)
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        assert!(started.elapsed() >= TIMEOUT);
        assert!(
            started.elapsed() < TIMEOUT + SLACK,
            "{:?}",
            started.elapsed()
        );
        assert!(client.connection.is_none());
    }

    #[test]
    fn a_missing_socket_fails_at_once() {
        let sock = TempSocket::new("missing");
        let mut client = Client::default();
        let err = client.round_trip(&sock.path, "ping\n", SLACK).unwrap_err();
        assert!(matches!(err, ClientError::Connect(_)), "{err}");
    }

    #[test]
    fn a_full_backlog_does_not_block_the_connect() {
        let sock = TempSocket::new("backlog");
        let listener = UnixListener::bind(&sock.path).unwrap();
        // A listener that never accepts and queues one connection (Linux: backlog + 1).
        crate::ffi::tests::set_backlog(&listener, 0);
        let mut client = Client::default();
        let first = client
            .round_trip(&sock.path, "ping\n", TIMEOUT)
            .unwrap_err();
        assert!(
            matches!(first, ClientError::Timeout("waiting for the reply")),
            "the first connection is queued and never answered: {first}"
        );
        let started = Instant::now();
        let second = client
            .round_trip(&sock.path, "ping\n", TIMEOUT)
            .unwrap_err();
        assert!(
            matches!(second, ClientError::Timeout("connecting")),
            "the queue is full now: {second}"
        );
        assert!(
            started.elapsed() < TIMEOUT + SLACK,
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn long_and_malformed_replies_are_refused() {
        fn long(_: &str) -> String {
            "accept ".to_string() + &"x".repeat(MAX_REPLY_BYTES)
        }
        fn nul(_: &str) -> String {
            "accept a\0b".to_string()
        }
        fn crlf(_: &str) -> String {
            "deny no\r".to_string()
        }
        let mut client = Client::default();
        for (reply, ok) in [
            (long as fn(&str) -> String, false),
            (nul, false),
            (crlf, true),
        ] {
            let sock = TempSocket::new("bad");
            let _requests = spawn_oracle(&sock.path, Behaviour::Serve, reply);
            let got = client.round_trip(&sock.path, "ping\n", SLACK);
            if ok {
                assert_eq!(got.unwrap(), "deny no");
            } else {
                assert!(got.is_err());
            }
        }
    }

    #[test]
    fn a_forked_child_never_uses_the_parents_connection() {
        let sock = TempSocket::new("fork");
        let _requests = spawn_oracle(&sock.path, Behaviour::Serve, echo);
        let mut client = Client::default();
        client.round_trip(&sock.path, "ping\n", SLACK).unwrap();
        // Pretend the connection was opened by another process.
        client.connection.as_mut().unwrap().pid = std::process::id().wrapping_add(1);
        client.round_trip(&sock.path, "ping\n", SLACK).unwrap();
        assert_eq!(client.connection.as_ref().unwrap().pid, std::process::id());
    }
}
