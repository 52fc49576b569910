//! The HTTP/1.1 loop on real loopback sockets, with a handler that echoes what it got;
//! and [`parse`] alone on every prefix of a request. Timeouts run on paused time: a
//! `settle()` lets the server run until it waits again, without waiting for real.

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::*;

/// Answers `{"query":...,"body":...}` and notes every refusal.
#[derive(Default)]
struct Echo {
    refused: Mutex<Vec<u16>>,
}

impl Handler for Echo {
    fn handle(&self, request: &Request<'_>, _peer: SocketAddr) -> Reply {
        let body = String::from_utf8_lossy(request.body);
        let echo = serde_json::json!({ "query": request.query, "body": body });
        Reply::json(serde_json::to_vec(&echo).unwrap())
    }

    fn refused(&self, _peer: SocketAddr, status: Status, _why: &str) {
        self.refused.lock().unwrap().push(status.code());
    }
}

/// A server on a free loopback port, serving `POST /policy` with [`Echo`].
struct Fixture {
    addr: SocketAddr,
    echo: Arc<Echo>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    slots: Arc<Slots>,
    stats: Arc<Listeners>,
}

const MAX_CONNECTIONS: usize = 4;

async fn start() -> Fixture {
    start_with(Limits::from(MAX_CONNECTIONS)).await
}

async fn start_with(limits: Limits) -> Fixture {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Arc::new(Echo::default());
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(Listeners::default());
    let slots = slots(limits, stats.clone());
    let task = tokio::spawn(serve_counted(
        listener,
        "/policy".into(),
        echo.clone(),
        limits,
        slots.clone(),
        stopped,
    ));
    Fixture {
        addr,
        echo,
        stop,
        task,
        slots,
        stats,
    }
}

impl Fixture {
    fn count(&self, name: &str) -> u64 {
        self.stats
            .policy
            .snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }
}

/// Lets every task run until it waits again (time is paused: no real wait).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Header fields, names lowercase.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (rd, wr) = stream.into_split();
        Client {
            rd: BufReader::new(rd),
            wr,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.unwrap();
    }

    /// Sends `bytes` one at a time, letting the server read each.
    async fn trickle(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.wr.write_all(&[*b]).await.unwrap();
            settle().await;
        }
    }

    async fn response(&mut self) -> Response {
        let mut line = String::new();
        self.rd.read_line(&mut line).await.unwrap();
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.rd.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header field");
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: String::new(),
        };
        let length: usize = response
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        self.rd.read_exact(&mut body).await.unwrap();
        response.body = String::from_utf8(body).unwrap();
        response
    }

    /// Whether the server has closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.rd.read_to_end(&mut rest).await, Ok(0))
    }
}

fn post(query: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /policy?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const CHUNKED: &[u8] =
    b"POST /policy?chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
    5\r\n{\"a\":\r\n3;ext=1\r\n1, \r\nA\r\n\"b\":\"xyz\"}\r\n0\r\nTrailer: t\r\n\r\n";

fn echoed(r: &Response) -> (Option<String>, String) {
    let v = r.json();
    (
        v["query"].as_str().map(str::to_string),
        v["body"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(start_paused = true)]
async fn requests_sent_byte_by_byte_are_answered() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    c.trickle(&post("n=1", r#"{"login":"alice"}"#)).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), None, "keep-alive is the default");
    assert_eq!(
        echoed(&r),
        (Some("n=1".into()), r#"{"login":"alice"}"#.into())
    );
    c.trickle(CHUNKED).await;
    let r = c.response().await;
    assert_eq!(
        echoed(&r),
        (Some("chunked".into()), r#"{"a":1, "b":"xyz"}"#.into())
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    let mut all = Vec::new();
    for n in 0..3 {
        all.extend(post(&format!("n={n}"), &format!("body {n}")));
    }
    all.extend_from_slice(CHUNKED);
    all.extend(post("n=last", ""));
    c.send(&all).await;
    for n in 0..3 {
        let r = c.response().await;
        assert_eq!(echoed(&r), (Some(format!("n={n}")), format!("body {n}")));
    }
    assert_eq!(echoed(&c.response().await).1, r#"{"a":1, "b":"xyz"}"#);
    assert_eq!(
        echoed(&c.response().await),
        (Some("n=last".into()), String::new())
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_close() {
    let f = start().await;
    let at_limit = "x".repeat(MAX_BODY_BYTES);
    let mut c = Client::connect(f.addr).await;
    c.send(&post("n=1", &at_limit)).await;
    assert_eq!(echoed(&c.response().await).1.len(), MAX_BODY_BYTES);

    c.send(&post("n=2", &format!("{at_limit}x"))).await;
    let r = c.response().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["error"], "request body over 16384 bytes");
    assert!(c.closed().await);

    // Chunked: refused as soon as the chunks announced add up to more.
    let mut c = Client::connect(f.addr).await;
    let half = MAX_BODY_BYTES / 2;
    let mut chunked = b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend(format!("{half:x}\r\n{}\r\n", "y".repeat(half)).into_bytes());
    chunked.extend(format!("{:x}\r\n", half + 1).into_bytes());
    c.send(&chunked).await;
    assert_eq!(c.response().await.status, 413);
    assert!(c.closed().await);
    assert_eq!(*f.echo.refused.lock().unwrap(), [413, 413]);
}

#[tokio::test]
async fn heads_over_the_limits_get_431_and_close() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    let long = format!(
        "POST /policy HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "v".repeat(MAX_HEAD_BYTES)
    );
    c.send(long.as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    let mut c = Client::connect(f.addr).await;
    let mut many = "POST /policy HTTP/1.1\r\n".to_string();
    for i in 0..=MAX_HEADERS {
        many.push_str(&format!("X-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    c.send(many.as_bytes()).await;
    assert_eq!(c.response().await.status, 431);
    assert!(c.closed().await);
    assert_eq!(*f.echo.refused.lock().unwrap(), [431, 431]);
}

#[tokio::test]
async fn a_garbage_head_gets_400_and_closes() {
    let f = start().await;
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n"[..],
        b"POST /policy HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"POST /policy HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /policy HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /policy HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /policy HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    ] {
        let mut c = Client::connect(f.addr).await;
        c.send(garbage).await;
        let r = c.response().await;
        let text = String::from_utf8_lossy(garbage);
        assert_eq!(r.status, 400, "{text}");
        assert_eq!(r.header("connection"), Some("close"), "{text}");
        assert!(r.json()["error"].is_string(), "{text}");
        assert!(c.closed().await, "{text}");
    }
    assert_eq!(f.echo.refused.lock().unwrap().len(), 8);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    c.send(
        b"POST /policy HTTP/1.1\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn http_1_0_closes_unless_asked_to_keep_alive() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    let keep = b"POST /policy HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}";
    for _ in 0..2 {
        c.send(keep).await;
        let r = c.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    c.send(b"POST /policy HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_answer() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    c.send(b"POST /policy?e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n")
        .await;
    let mut interim = String::new();
    c.rd.read_line(&mut interim).await.unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n");
    c.rd.read_line(&mut interim).await.unwrap();
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"{\"a\":\"b\"}").await;
    assert_eq!(
        echoed(&c.response().await),
        (Some("e".into()), r#"{"a":"b"}"#.into())
    );
    // A body sent along with the head needs no interim answer.
    let mut both =
        b"POST /policy?f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    both.extend(post("g", "{}"));
    c.send(&both).await;
    assert_eq!(c.response().await.status, 200);
    assert_eq!(echoed(&c.response().await).0.as_deref(), Some("g"));
}

#[tokio::test]
async fn other_methods_and_paths_are_not_served() {
    let f = start().await;
    let mut c = Client::connect(f.addr).await;
    c.send(b"GET /policy?command=allow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    c.send(b"POST /other?command=allow HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("allow"), None);
    c.send(&post("still", "{}")).await;
    assert_eq!(
        c.response().await.status,
        200,
        "the connection stays usable"
    );
    assert!(
        f.echo.refused.lock().unwrap().is_empty(),
        "404 and 405 are not refusals of the request's form"
    );
}

#[tokio::test(start_paused = true)]
async fn silent_and_slow_heads_are_closed_after_the_head_timeout() {
    let f = start().await;
    let limits = Limits::from(MAX_CONNECTIONS);
    let started = tokio::time::Instant::now();
    let mut silent = Client::connect(f.addr).await;
    let mut slow = Client::connect(f.addr).await;
    slow.send(b"POST /policy HTTP/1.1\r\nContent-Length: 2\r\n")
        .await;
    settle().await;
    assert!(silent.closed().await);
    assert!(slow.closed().await);
    let waited = started.elapsed();
    assert!(
        waited >= limits.head_timeout && waited < limits.head_timeout * 2,
        "closed after the head timeout, not the idle one: {waited:?}"
    );
    assert_eq!(f.count("request_timeouts"), 2);
    // A head trickled in, a byte every 100 ms, is cut at the head timeout too.
    let mut trickler = Client::connect(f.addr).await;
    trickler.send(b"POST /policy HTTP/1.1\r\n").await;
    let started = tokio::time::Instant::now();
    let request = post("", "{}");
    for b in &request[24..] {
        if trickler.wr.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > limits.head_timeout * 3 {
            break;
        }
    }
    assert!(trickler.closed().await);
    assert!(started.elapsed() <= limits.head_timeout + Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let f = start().await;
    let started = tokio::time::Instant::now();
    let mut idle = Client::connect(f.addr).await;
    idle.send(&post("", "{}")).await;
    assert_eq!(idle.response().await.status, 200);
    assert!(idle.closed().await);
    let waited = started.elapsed();
    assert!(
        waited >= HEADER_READ_TIMEOUT && waited < HEADER_READ_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
    assert_eq!(f.count("idle_timeouts"), 1);
    // A connection in use is not cut: the timeout runs from the last request.
    let mut busy = Client::connect(f.addr).await;
    for _ in 0..3 {
        busy.send(&post("", "{}")).await;
        assert_eq!(busy.response().await.status, 200);
        tokio::time::sleep(HEADER_READ_TIMEOUT / 2).await;
    }
}

/// At the cap, a newcomer is served at once: the connection idle the longest makes room.
#[tokio::test(start_paused = true)]
async fn at_the_cap_the_idlest_connection_makes_room() {
    let f = start().await;
    let mut idle = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        let mut c = Client::connect(f.addr).await;
        c.send(&post(&format!("n={i}"), "{}")).await;
        assert_eq!(c.response().await.status, 200);
        idle.push(c);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    let mut newcomer = Client::connect(f.addr).await;
    newcomer.send(&post("new", "{}")).await;
    assert_eq!(newcomer.response().await.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(10),
        "served at once"
    );
    assert!(idle[0].closed().await, "the idlest was closed");
    assert_eq!(f.count("shed_idle"), 1);
    for c in &mut idle[1..] {
        c.send(&post("still", "{}")).await;
        assert_eq!(c.response().await.status, 200, "the others stay");
    }
}

/// At the cap with every connection in the middle of a request, a newcomer waits for a
/// slot: the head timeout frees one.
#[tokio::test(start_paused = true)]
async fn at_the_cap_with_none_idle_a_newcomer_waits_at_most_the_head_timeout() {
    let f = start().await;
    let limits = Limits::from(MAX_CONNECTIONS);
    let mut slow = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut c = Client::connect(f.addr).await;
        c.send(b"POST /policy HTTP/1.1\r\n").await;
        slow.push(c);
    }
    settle().await;
    let started = tokio::time::Instant::now();
    let mut newcomer = Client::connect(f.addr).await;
    newcomer.send(&post("new", "{}")).await;
    assert_eq!(newcomer.response().await.status, 200);
    assert!(started.elapsed() <= limits.head_timeout + Duration::from_millis(100));
    assert_eq!(f.count("waited_full"), 1);
    assert_eq!(f.count("shed_idle"), 0);
}

/// One address may hold `max_connections_per_ip`: past it, its own idlest connection
/// makes room, and with none idle the newcomer is closed.
#[tokio::test(start_paused = true)]
async fn the_per_address_cap_sheds_its_own_idle_then_refuses() {
    let f = start_with(Limits {
        max_connections_per_ip: 2,
        ..Limits::from(8)
    })
    .await;
    let mut a = Client::connect(f.addr).await;
    a.send(&post("a", "{}")).await;
    assert_eq!(a.response().await.status, 200);
    let mut b = Client::connect(f.addr).await;
    b.send(b"POST /policy HTTP/1.1\r\n").await;
    settle().await;
    let mut c = Client::connect(f.addr).await;
    c.send(&post("c", "{}")).await;
    assert_eq!(c.response().await.status, 200, "a (idle) made room");
    assert!(a.closed().await);
    assert_eq!(f.count("shed_idle"), 1);
    c.send(b"POST /policy HTTP/1.1\r\n").await;
    settle().await;
    let mut d = Client::connect(f.addr).await;
    assert!(
        d.closed().await,
        "b and c are mid-request: d is turned away"
    );
    assert_eq!(f.count("refused_per_peer"), 1);
    assert_eq!(f.slots.open(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_and_finishes_busy_ones() {
    let f = start().await;
    let mut idle = Client::connect(f.addr).await;
    idle.send(&post("idle", "{}")).await;
    assert_eq!(idle.response().await.status, 200);
    let mut busy = Client::connect(f.addr).await;
    let request = post("busy", r#"{"login":"bob"}"#);
    let (head, rest) = request.split_at(20);
    busy.send(head).await;
    settle().await;

    let _ = f.stop.send(true);
    f.task.await.unwrap();
    let slots = f.slots.clone();
    assert!(idle.closed().await, "an idle connection closes at once");
    busy.send(rest).await;
    let r = busy.response().await;
    assert_eq!(r.status, 200, "the request under way is answered");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(busy.closed().await);
    assert!(
        TcpStream::connect(f.addr).await.is_err(),
        "no longer listening"
    );
    slots.closed().await;
    assert_eq!(slots.open(), 0, "every connection closed");
}

// -------------------------------------------------------------------------------------
// `parse` alone
// -------------------------------------------------------------------------------------

/// Parses `buf` from scratch; the request as (path, query, body), or the outcome.
fn parse_once(buf: &[u8]) -> Result<(String, Option<String>, Vec<u8>, usize), String> {
    let mut progress = Progress::default();
    parse_with(buf, &mut progress)
}

fn parse_with(
    buf: &[u8],
    progress: &mut Progress,
) -> Result<(String, Option<String>, Vec<u8>, usize), String> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    match parse(buf, progress, &mut headers) {
        Parsed::Request(r, len) => Ok((
            r.path.to_string(),
            r.query.map(str::to_string),
            r.body.to_vec(),
            len,
        )),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn every_prefix_of_a_request_is_partial_and_progress_does_not_change_the_result() {
    for request in [post("q", r#"{"login":"x"}"#), CHUNKED.to_vec()] {
        let whole = parse_once(&request).unwrap();
        assert_eq!(whole.3, request.len());
        let mut progress = Progress::default();
        for k in 0..request.len() {
            assert_eq!(parse_once(&request[..k]), Err("Partial".into()), "{k}");
            assert_eq!(
                parse_with(&request[..k], &mut progress),
                Err("Partial".into())
            );
        }
        assert_eq!(parse_with(&request, &mut progress), Ok(whole.clone()));
        // The next request reads the same with the same `Progress`.
        assert_eq!(parse_with(&request, &mut progress), Ok(whole));
    }
}

#[test]
fn a_request_after_a_chunked_one_has_its_own_body() {
    let mut progress = Progress::default();
    assert_eq!(
        parse_with(CHUNKED, &mut progress).unwrap().2,
        br#"{"a":1, "b":"xyz"}"#
    );
    let empty = parse_with(b"POST /p HTTP/1.1\r\n\r\n", &mut progress).unwrap();
    assert_eq!(empty.2, b"");
}

#[test]
fn limits_hold_exactly() {
    // A head of exactly MAX_HEAD_BYTES is taken, one more byte is not.
    let head = |n: usize| {
        let start = "POST /p HTTP/1.1\r\nX: ";
        format!("{start}{}\r\n\r\n", "v".repeat(n - start.len() - 4))
    };
    assert!(parse_once(head(MAX_HEAD_BYTES).as_bytes()).is_ok());
    assert_eq!(
        parse_once(head(MAX_HEAD_BYTES + 1).as_bytes()),
        Err("Refused(HeaderFieldsTooLarge, \"request head over 8192 bytes\")".into())
    );
    assert_eq!(
        parse_once(&head(MAX_HEAD_BYTES + 1).as_bytes()[..MAX_HEAD_BYTES]),
        Err("Refused(HeaderFieldsTooLarge, \"request head over 8192 bytes\")".into()),
        "a partial head as long as the limit cannot end within it"
    );
    // Chunk framing beyond MAX_REQUEST_BYTES.
    let mut tiny = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    while tiny.len() <= MAX_REQUEST_BYTES {
        tiny.extend_from_slice(b"1;padding-padding-padding\r\nx\r\n");
    }
    assert!(parse_once(&tiny).unwrap_err().contains("PayloadTooLarge"));
}
