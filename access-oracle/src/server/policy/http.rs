//! The policy endpoint's HTTP/1.1 server: one `POST` route, JSON answers, keep-alive.
//!
//! Why not hyper and axum: on the 2-core VM of the benchmarks they cost 16-19 µs of CPU
//! per request even for an empty handler, three times the endpoint's own work
//! (`docs/PERFORMANCE.md`). Dovecot's auth policy client needs little of HTTP: small
//! `POST`s with a `Content-Length`, one at a time on keep-alive connections. This module
//! does that, and the rest of HTTP/1.1 a client may send, on top of `httparse`:
//!
//! * [`parse`]: the bytes received so far -> a whole request, "read more", "send
//!   `100 Continue`", or a refusal. Pure (no I/O), so it is fuzzed
//!   (`fuzz/fuzz_targets/policy_http.rs`). Bodies come with `Content-Length` or
//!   `Transfer-Encoding: chunked`; a head is at most [`MAX_HEAD_BYTES`] and
//!   [`MAX_HEADERS`] fields (else 431), a body at most [`MAX_BODY_BYTES`] (else 413), a
//!   head `httparse` cannot read is refused (400). A refusal closes the connection
//!   (gently: see `linger`).
//! * `connection`: one read buffer and one write buffer per connection, reused. Every
//!   whole request in the read buffer is answered in order (pipelining comes free), the
//!   answers go out in one write. Keep-alive is HTTP/1.1's default; `Connection: close`
//!   is honoured; HTTP/1.0 closes unless it asks for `keep-alive`.
//! * [`serve`]: the accept loop, capped at `max_connections` open connections and
//!   `max_connections_per_ip` from one address ([`Limits`]). At a cap, the keep-alive
//!   connection idle the longest is closed to make room (`server::accept`); with none
//!   idle, a newcomer over the global cap waits for a slot, one over its address's cap is
//!   closed.
//!
//! Routing is one comparison: the configured path gets the [`Handler`], any other path
//! 404, another method on it 405 with `Allow: POST` ([`Handler::METHOD`]: the metrics
//! endpoint, `server::metrics`, serves `GET` on the same loop).
//!
//! Time ([`Limits`]): a request's head must be in within `head_timeout` of its first
//! byte (a new connection's first head: of the connection's start), the whole request
//! within `request_timeout`; a keep-alive connection waits at most `idle_timeout` for
//! its next request. The connection's timer is moved only when a shorter limit starts or
//! it fires early, not on every request. On shutdown, idle connections close at once;
//! one in the middle of a request gets its answer (with `Connection: close`) first.
//!
//! Left out, as no policy client needs them: absolute-form request targets (404), a
//! `Date` header, transfer codings other than `chunked` (400), `Expect` values other
//! than `100-continue` (ignored), HTTP/2.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::server::accept::{self, Limits as Caps, Listeners, Slot, Slots, WhenFull};

/// The largest request head (request line and header fields), in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The most header fields in a request head.
pub const MAX_HEADERS: usize = 64;

/// The largest request body, in bytes; Dovecot's are a few hundred.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The most bytes one request may take on the wire: its head, its body, and the framing
/// of a chunked body (sizes, extensions, trailers) up to [`MAX_BODY_BYTES`] more.
pub const MAX_REQUEST_BYTES: usize = MAX_HEAD_BYTES + 2 * MAX_BODY_BYTES;

/// How long an idle keep-alive connection stays open by default. Dovecot closes its
/// idle ones after 5 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The endpoint's connection caps and timeouts (`[policy]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_ip: usize,
    /// How long a request's head may take from its first byte.
    pub head_timeout: Duration,
    /// How long a whole request may take from its first byte.
    pub request_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

impl From<&crate::config::policy::PolicyConfig> for Limits {
    /// The endpoint's connection limits and timeouts of `[policy]`.
    fn from(c: &crate::config::policy::PolicyConfig) -> Limits {
        Limits {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            head_timeout: Duration::from_millis(c.head_timeout_ms),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        }
    }
}

impl From<usize> for Limits {
    /// `max_connections` open at once, every other limit at its default.
    fn from(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_connections_per_ip: max_connections,
            head_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            idle_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// How much room the read buffer gets before each read.
const READ_BYTES: usize = 8 * 1024;

/// The interim answer to `Expect: 100-continue`.
const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400: a head that cannot be read, a bad `Content-Length` or chunk, or a body the
    /// handler refuses.
    BadRequest,
    /// 401: the handler's; no or the wrong credentials.
    Unauthorized,
    /// 404: not the configured path.
    NotFound,
    /// 405: not `POST`.
    MethodNotAllowed,
    /// 413: a body over [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 431: a head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    HeaderFieldsTooLarge,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::PayloadTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
        }
    }

    /// The status line, with its line end.
    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::Unauthorized => b"HTTP/1.1 401 Unauthorized\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::PayloadTooLarge => b"HTTP/1.1 413 Payload Too Large\r\n",
            Status::HeaderFieldsTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        }
    }
}

/// A whole request, borrowed from the read buffer (a chunked body from [`Progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, as sent (`POST`).
    pub method: &'a str,
    /// The request target up to its `?`.
    pub path: &'a str,
    /// What follows the `?`, if there is one.
    pub query: Option<&'a str>,
    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// The header fields, in order.
    pub headers: &'a [httparse::Header<'a>],
    /// The body (a chunked one decoded).
    pub body: &'a [u8],
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
}

impl<'a> Request<'a> {
    /// The value of the first header field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// The `Content-Type` of JSON answers.
const JSON: &str = "application/json";

/// An answer: a status, a body and its type (JSON unless made by [`Reply::typed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: Status,
    /// The body.
    pub body: Cow<'static, [u8]>,
    /// The body's `Content-Type`.
    pub content_type: &'static str,
}

impl Reply {
    /// 200 with `body`.
    pub fn json(body: impl Into<Cow<'static, [u8]>>) -> Reply {
        Reply {
            status: Status::Ok,
            body: body.into(),
            content_type: JSON,
        }
    }

    /// 200 with `body` of type `content_type`.
    pub fn typed(content_type: &'static str, body: impl Into<Cow<'static, [u8]>>) -> Reply {
        Reply {
            status: Status::Ok,
            body: body.into(),
            content_type,
        }
    }

    /// `status` with `{"error":"<why>"}`.
    pub fn error(status: Status, why: &str) -> Reply {
        let body = serde_json::to_vec(&serde_json::json!({ "error": why })).unwrap_or_default();
        Reply {
            status,
            body: body.into(),
            content_type: JSON,
        }
    }
}

/// What the server asks of the endpoint behind its route.
pub trait Handler: Send + Sync + 'static {
    /// The one method the route takes; any other is answered 405.
    const METHOD: &'static str = "POST";

    /// Answers a whole request to the route with [`Handler::METHOD`].
    fn handle(&self, request: &Request<'_>, peer: SocketAddr) -> Reply;

    /// Hears of a request refused before it could reach [`Handler::handle`] (400, 413,
    /// 431; the connection is closed after the answer), for logs and counters.
    fn refused(&self, peer: SocketAddr, status: Status, why: &str) {
        let _ = (peer, status, why);
    }

    /// Runs every few seconds (for summaries of rate-limited warnings).
    fn tick(&self) {}
}

/// Where the reading of a request stands between two calls of [`parse`] on a growing
/// buffer; back to the start once the request is whole or refused.
#[derive(Debug, Default)]
pub struct Progress {
    /// Parsing again is pointless until the buffer holds this many bytes.
    needed: usize,
    /// Chunked body: where the next chunk starts; 0 before the body is reached.
    next_chunk: usize,
    /// The decoded chunked body so far.
    chunked: Vec<u8>,
    /// `100 Continue` was due and has been handed out.
    continued: bool,
    /// The head is in, the body is not (yet).
    in_body: bool,
}

/// What the bytes received so far hold, by [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole request, and the number of bytes it took from the buffer.
    Request(Request<'a>, usize),
    /// Not a whole request yet: read more.
    Partial,
    /// The head is in and asks for `100 Continue` before its body: send it, read more.
    Continue,
    /// Not a request this server takes: answer `status` with the reason, then close.
    Refused(Status, &'static str),
}

/// Reads the request at the start of `buf`, with `progress` kept from the previous call
/// on the same request (the same buffer, grown). `headers` is scratch space for the
/// head's fields. Never panics, whatever the bytes.
pub fn parse<'a>(
    buf: &'a [u8],
    progress: &'a mut Progress,
    headers: &'a mut [MaybeUninit<httparse::Header<'a>>; MAX_HEADERS],
) -> Parsed<'a> {
    if buf.len() < progress.needed {
        return Parsed::Partial;
    }
    let parsed = parse_request(buf, progress, headers);
    if matches!(parsed, Parsed::Partial | Parsed::Continue) {
        return parsed;
    }
    let was_chunked = progress.next_chunk != 0;
    progress.needed = 0;
    progress.next_chunk = 0;
    progress.continued = false;
    progress.in_body = false;
    match parsed {
        Parsed::Request(mut request, len) if was_chunked => {
            request.body = &progress.chunked;
            Parsed::Request(request, len)
        }
        other => other,
    }
}

/// [`parse`] without the bookkeeping: a chunked body is left in `progress.chunked`.
fn parse_request<'a>(
    buf: &'a [u8],
    progress: &mut Progress,
    headers: &'a mut [MaybeUninit<httparse::Header<'a>>; MAX_HEADERS],
) -> Parsed<'a> {
    use httparse::Status::{Complete, Partial};
    let mut head = httparse::Request::new(&mut []);
    let head_len = match head.parse_with_uninit_headers(buf, headers) {
        Ok(Complete(n)) if n <= MAX_HEAD_BYTES => n,
        Ok(Partial) if buf.len() < MAX_HEAD_BYTES => {
            progress.needed = buf.len() + 1;
            return Parsed::Partial;
        }
        Ok(_) => return refused_head_size(),
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(Status::HeaderFieldsTooLarge, "more than 64 header fields");
        }
        Err(_) => return Parsed::Refused(Status::BadRequest, "malformed request head"),
    };
    let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version) else {
        return Parsed::Refused(Status::BadRequest, "malformed request head");
    };
    let headers: &'a [httparse::Header<'a>] = head.headers;
    let mut fields = Fields::default();
    for h in headers {
        if let Err(why) = fields.add(h) {
            return Parsed::Refused(Status::BadRequest, why);
        }
    }
    let (body, end) = match fields.framing {
        Framing::None => (&buf[..0], head_len),
        Framing::Length(n) if n > MAX_BODY_BYTES as u64 => return refused_body_size(),
        Framing::Length(n) => {
            let end = head_len + n as usize;
            if buf.len() < end {
                progress.needed = end;
                return partial_body(version, fields.expect_continue, progress);
            }
            (&buf[head_len..end], end)
        }
        Framing::Chunked => match chunked(buf, head_len, progress) {
            // The body is in `progress.chunked`; `parse` hands it out.
            Ok(Some(end)) => (&buf[..0], end),
            Ok(None) if buf.len() >= MAX_REQUEST_BYTES => return refused_body_size(),
            Ok(None) => return partial_body(version, fields.expect_continue, progress),
            Err(refusal) => return refusal,
        },
    };
    if end > MAX_REQUEST_BYTES {
        return refused_body_size();
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let keep_alive = !fields.close && (version == 1 || fields.keep_alive);
    Parsed::Request(
        Request {
            method,
            path,
            query,
            version,
            headers,
            body,
            keep_alive,
        },
        end,
    )
}

fn refused_head_size() -> Parsed<'static> {
    Parsed::Refused(Status::HeaderFieldsTooLarge, "request head over 8192 bytes")
}

fn refused_body_size() -> Parsed<'static> {
    Parsed::Refused(Status::PayloadTooLarge, "request body over 16384 bytes")
}

/// A body not all here: `100 Continue` if the client waits for it (once), else read more.
fn partial_body(version: u8, expect_continue: bool, progress: &mut Progress) -> Parsed<'static> {
    progress.in_body = true;
    if expect_continue && version == 1 && !progress.continued {
        progress.continued = true;
        Parsed::Continue
    } else {
        Parsed::Partial
    }
}

/// How the body is delimited.
#[derive(Debug, Default, Clone, Copy)]
enum Framing {
    /// No body.
    #[default]
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the header fields say about the connection and the body.
#[derive(Debug, Default)]
struct Fields {
    framing: Framing,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Fields {
    /// Takes in one header field; refuses the ambiguous framings that let requests be
    /// smuggled past a proxy (two lengths, a length and chunks).
    fn add(&mut self, h: &httparse::Header<'_>) -> Result<(), &'static str> {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("malformed Content-Length")?;
            if !matches!(self.framing, Framing::None) {
                return Err("more than one Content-Length or Transfer-Encoding");
            }
            self.framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !h.value.eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported Transfer-Encoding: only chunked is");
            }
            if !matches!(self.framing, Framing::None) {
                return Err("more than one Content-Length or Transfer-Encoding");
            }
            self.framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in h.value.split(|&b| b == b',') {
                let option = option.trim_ascii();
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }
}

/// Decodes the chunked body that starts at `buf[body_at..]` into `progress.chunked`,
/// going on from where the previous call stopped. `Some(end)` once the last chunk and
/// the trailer fields are in, `None` while some are missing.
fn chunked(
    buf: &[u8],
    body_at: usize,
    progress: &mut Progress,
) -> Result<Option<usize>, Parsed<'static>> {
    use httparse::Status::{Complete, Partial};
    let malformed = Parsed::Refused(Status::BadRequest, "malformed chunked body");
    if progress.next_chunk == 0 {
        progress.chunked.clear();
        progress.next_chunk = body_at;
    }
    loop {
        let at = progress.next_chunk;
        let rest = &buf[at..];
        if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(malformed);
        }
        let (line, size) = match httparse::parse_chunk_size(rest) {
            Ok(Complete(found)) => found,
            Ok(Partial) => {
                progress.needed = buf.len() + 1;
                return Ok(None);
            }
            Err(_) => return Err(malformed),
        };
        let data = at + line;
        if size == 0 {
            // The last chunk: trailer fields (ignored) up to an empty line.
            let mut trailers = [httparse::EMPTY_HEADER; 16];
            return match httparse::parse_headers(&buf[data..], &mut trailers) {
                Ok(Complete((n, _))) => Ok(Some(data + n)),
                Ok(Partial) => {
                    progress.needed = buf.len() + 1;
                    Ok(None)
                }
                Err(_) => Err(malformed),
            };
        }
        let room = MAX_BODY_BYTES - progress.chunked.len();
        if size > room as u64 {
            return Err(refused_body_size());
        }
        let end = data + size as usize;
        if end + 2 > MAX_REQUEST_BYTES {
            // Refused now rather than after waiting for bytes that could only be refused.
            return Err(refused_body_size());
        }
        if buf.len() < end + 2 {
            progress.needed = end + 2;
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(malformed);
        }
        progress.chunked.extend_from_slice(&buf[data..end]);
        progress.next_chunk = end + 2;
    }
}

/// Appends `reply` to `out`, as one HTTP/1.1 response.
/// `allow`: the method to name in an `Allow` field (with 405).
fn write_response(
    out: &mut Vec<u8>,
    reply: &Reply,
    request: Option<&Request<'_>>,
    allow: Option<&str>,
) {
    out.extend_from_slice(reply.status.line());
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(reply.content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(reply.body.len()).as_bytes());
    match request {
        Some(r) if r.keep_alive && r.version == 0 => {
            out.extend_from_slice(b"\r\nConnection: keep-alive")
        }
        Some(r) if r.keep_alive => {}
        _ => out.extend_from_slice(b"\r\nConnection: close"),
    }
    if let Some(method) = allow {
        out.extend_from_slice(b"\r\nAllow: ");
        out.extend_from_slice(method.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&reply.body);
}

/// Routes a whole request and appends its answer to `out`.
fn answer<H: Handler>(
    request: &Request<'_>,
    peer: SocketAddr,
    route: &str,
    handler: &H,
    out: &mut Vec<u8>,
) {
    const NOT_FOUND: &[u8] = br#"{"error":"not found"}"#;
    let (reply, allow) = if request.path != route {
        (
            Reply {
                status: Status::NotFound,
                body: NOT_FOUND.into(),
                content_type: JSON,
            },
            None,
        )
    } else if request.method != H::METHOD {
        (
            Reply::error(
                Status::MethodNotAllowed,
                &format!("method not allowed: use {}", H::METHOD),
            ),
            Some(H::METHOD),
        )
    } else {
        (handler.handle(request, peer), None)
    };
    write_response(out, &reply, Some(request), allow);
}

/// Accepts connections until `shutdown` turns true and serves `POST route` on each with
/// `handler`, within `limits`; returns the slots of the open connections, so the caller
/// can wait for them. Counts in a [`Listeners`] of its own: see [`serve_counted`].
pub async fn serve<H: Handler>(
    listener: TcpListener,
    route: Arc<str>,
    handler: Arc<H>,
    limits: impl Into<Limits>,
    shutdown: watch::Receiver<bool>,
) -> Arc<Slots> {
    let limits = limits.into();
    let slots = slots(limits, Arc::default());
    serve_counted(listener, route, handler, limits, slots.clone(), shutdown).await;
    slots
}

/// The slots of an endpoint with `limits`, counted in `stats.policy`.
pub fn slots(limits: Limits, stats: Arc<Listeners>) -> Arc<Slots> {
    Slots::new(
        "policy endpoint",
        Caps {
            max: limits.max_connections,
            max_per_peer: limits.max_connections_per_ip,
        },
        stats,
        |l| &l.policy,
    )
}

/// [`serve`] on the given slots (made by [`slots`]).
pub async fn serve_counted<H: Handler>(
    listener: TcpListener,
    route: Arc<str>,
    handler: Arc<H>,
    limits: Limits,
    slots: Arc<Slots>,
    shutdown: watch::Receiver<bool>,
) {
    let listener = &listener;
    accept::serve(
        slots,
        WhenFull::Wait,
        shutdown,
        move || async move {
            listener
                .accept()
                .await
                .map(|(s, peer)| ((s, peer), Some(peer.ip())))
        },
        |(stream, peer), slot| {
            tokio::spawn(connection(
                stream,
                peer,
                route.clone(),
                handler.clone(),
                slot,
                limits,
            ));
        },
        // Over its address's cap with none of its connections idle: closed.
        |_, _| {},
        || handler.tick(),
    )
    .await
}

/// What a connection waits for, for the timeout that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The next request of a keep-alive connection.
    Idle,
    /// The rest of a head (or a new connection's first head).
    Head,
    /// The rest of a body.
    Body,
}

/// Serves one connection: reads, answers every whole request in order, writes.
async fn connection<H: Handler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    route: Arc<str>,
    handler: Arc<H>,
    slot: Slot,
    limits: Limits,
) {
    let _ = stream.set_nodelay(true);
    let conn = slot.conn().clone();
    let mut input: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut output: Vec<u8> = Vec::with_capacity(1024);
    let mut progress = Progress::default();
    let mut stopping = slot.stopping();
    let mut served = false;
    // The first byte of the request being read; a new connection's first request is
    // timed from the connection's start.
    let mut request_since = conn.idle_since();
    let timer = tokio::time::sleep(limits.head_timeout);
    let mut timer = std::pin::pin!(timer);
    // One wait for shedding and shutdown for the connection's whole life.
    let signal = conn.signalled();
    let mut signal = std::pin::pin!(signal);
    let mut signalled = false;
    loop {
        let mut used = 0;
        let mut close = false;
        let mut refused = false;
        while !close {
            let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            match parse(&input[used..], &mut progress, &mut headers) {
                Parsed::Request(mut request, len) => {
                    used += len;
                    request.keep_alive &= !stopping;
                    close = !request.keep_alive;
                    answer(&request, peer, &route, &*handler, &mut output);
                }
                Parsed::Partial => break,
                Parsed::Continue => {
                    output.extend_from_slice(CONTINUE_100);
                    break;
                }
                Parsed::Refused(status, why) => {
                    handler.refused(peer, status, why);
                    write_response(&mut output, &Reply::error(status, why), None, None);
                    close = true;
                    refused = true;
                }
            }
        }
        // Bytes the client sent that will not be read: see `linger`.
        let unread = refused || input.len() > used;
        if used > 0 {
            input.drain(..used);
            served = true;
            request_since = None;
        }
        let now = Instant::now();
        if !output.is_empty() {
            // A client that does not read its answers: given the request timeout.
            let limit = now + limits.request_timeout;
            let mut write = std::pin::pin!(stream.write_all(&output));
            loop {
                tokio::select! {
                    r = write.as_mut() => if r.is_err() { return } else { break },
                    () = timer.as_mut() => {
                        if Instant::now() >= limit {
                            return;
                        }
                        timer.as_mut().reset(limit);
                    }
                }
            }
            output.clear();
        }
        if close && unread {
            linger(stream).await;
            return;
        }
        if close || (stopping && input.is_empty()) {
            return;
        }
        let (waiting, expiry) = if input.is_empty() {
            if !conn.idle(now) {
                return; // Shed to make room.
            }
            match (served, conn.idle_since()) {
                (true, Some(since)) => (Waiting::Idle, since + limits.idle_timeout),
                (_, since) => (Waiting::Head, since.unwrap_or(now) + limits.head_timeout),
            }
        } else {
            let since = *request_since.get_or_insert(now);
            if progress.in_body {
                (Waiting::Body, since + limits.request_timeout)
            } else {
                (Waiting::Head, since + limits.head_timeout)
            }
        };
        if timer.deadline() > expiry {
            timer.as_mut().reset(expiry);
        }
        input.reserve(READ_BYTES);
        tokio::select! {
            r = stream.read_buf(&mut input) => match r {
                Ok(0) => return,
                Ok(_) => if !conn.busy() { return },
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "policy connection read failed");
                    return;
                }
            },
            () = timer.as_mut() => {
                if Instant::now() < expiry {
                    // Set for an earlier limit that no longer applies.
                    timer.as_mut().reset(expiry);
                    continue;
                }
                let ip = Some(peer.ip());
                match waiting {
                    Waiting::Idle => slot.slots().idle_timeout(),
                    Waiting::Head => slot.slots().request_timeout("a request head", ip, limits.head_timeout),
                    Waiting::Body => slot.slots().request_timeout("a request", ip, limits.request_timeout),
                }
                return;
            }
            () = signal.as_mut(), if !signalled => {
                signalled = true;
                if conn.is_shed() {
                    return;
                }
                stopping = true;
            }
        }
    }
}

/// Closes a connection whose client may still be sending (a refused body, requests
/// after `Connection: close`): closing with unread bytes would make the kernel reset the
/// connection, and the client could lose the answer before reading it. So: end our
/// side, then read and drop what comes, for a short while, until the client closes too.
async fn linger(mut stream: TcpStream) {
    const LINGER: Duration = Duration::from_secs(2);
    let _ = stream.shutdown().await;
    let drain = async {
        let mut scratch = [0u8; 4096];
        let mut left = MAX_REQUEST_BYTES;
        while left > 0 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests;
