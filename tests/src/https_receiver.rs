//! An HTTPS receiver on loopback for the webhook sink's tests: it presents the server
//! certificate of a [`TestCa`], reads HTTP/1.1 requests (keep-alive, `Content-Length`
//! bodies) and records every one, headers and body, as it came. It can be told to
//! answer a status (500, 429, ...) to a number of requests before answering 200 again,
//! or to hang: accept connections and never answer, not even the TLS handshake.
//!
//! Plain threads and rustls' blocking `StreamOwned`; one thread per connection. Drop
//! stops it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::tlsca::TestCa;

/// The largest request head and body read.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 16 << 20;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body's bytes.
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Request {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    /// Answer `.1` to the next `.0` requests.
    fail: Mutex<(usize, u16)>,
    hang: AtomicBool,
    connections: AtomicUsize,
    handshake_failures: AtomicUsize,
    held: Mutex<Vec<TcpStream>>,
}

/// A running HTTPS receiver on 127.0.0.1.
pub struct HttpsReceiver {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl HttpsReceiver {
    /// Listens on a free loopback port, presenting `ca`'s server certificate; answers
    /// 200 to every request.
    pub fn start(ca: &TestCa) -> HttpsReceiver {
        HttpsReceiver::listen(ca, false)
    }

    /// Listens and accepts connections but never answers anything (no TLS handshake,
    /// no HTTP answer): a hung receiver. Its connections stay open until it is dropped.
    pub fn hanging(ca: &TestCa) -> HttpsReceiver {
        HttpsReceiver::listen(ca, true)
    }

    fn listen(ca: &TestCa, hang: bool) -> HttpsReceiver {
        let config = ca.server_config(false);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTPS receiver");
        let port = listener.local_addr().expect("its address").port();
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let shared = Arc::new(Shared::default());
        shared.hang.store(hang, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            shared.connections.fetch_add(1, Ordering::Relaxed);
                            if shared.hang.load(Ordering::Relaxed) {
                                shared.held.lock().expect("held").push(tcp);
                                continue;
                            }
                            let (shared, stop, config) =
                                (shared.clone(), stop.clone(), config.clone());
                            thread::spawn(move || serve(tcp, config, &shared, &stop));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        HttpsReceiver {
            port,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:<port><path>` (the test certificate names 127.0.0.1).
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Answers `status` to the next `count` requests (then 200 again).
    pub fn fail_next(&self, count: usize, status: u16) {
        *self.shared.fail.lock().expect("fail") = (count, status);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// Waits (bounded) until at least `count` requests came, then returns them all.
    pub fn wait_for(&self, count: usize, deadline: Duration) -> Vec<Request> {
        let until = Instant::now() + deadline;
        loop {
            let got = self.requests();
            if got.len() >= count || Instant::now() >= until {
                return got;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (the client did not trust the certificate, ...).
    pub fn handshake_failures(&self) -> usize {
        self.shared.handshake_failures.load(Ordering::Relaxed)
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.shared.held.lock().map(|mut h| h.clear()).ok();
    }
}

/// Reads what comes next from `stream` onto `buf`, retrying read timeouts until `stop`;
/// `false` at end of input, an error or `stop`.
fn read_some(stream: &mut impl Read, buf: &mut Vec<u8>, stop: &AtomicBool) -> bool {
    let mut chunk = [0u8; 16 << 10];
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// One connection: TLS, then requests until the client closes it.
fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, shared: &Shared, stop: &AtomicBool) {
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake first, to count the ones that fail.
    while tls.conn.is_handshaking() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    let mut buf = Vec::new();
    loop {
        // The head.
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if buf.len() > MAX_HEAD || !read_some(&mut tls, &mut buf, stop) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return;
        }
        while buf.len() < len {
            if !read_some(&mut tls, &mut buf, stop) {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let status = {
            let mut fail = shared.fail.lock().expect("fail");
            if fail.0 > 0 {
                fail.0 -= 1;
                fail.1
            } else {
                200
            }
        };
        shared.requests.lock().expect("requests").push(Request {
            method,
            target,
            headers,
            body,
            answered: status,
        });
        let text = if status == 200 {
            "ok"
        } else {
            "try again later"
        };
        let reply = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            reason(status),
            text.len()
        );
        if tls.write_all(reply.as_bytes()).is_err() || tls.flush().is_err() {
            return;
        }
    }
}
