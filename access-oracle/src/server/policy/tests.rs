//! The endpoint over real HTTP/1.1 on loopback: keys, commands, bodies, keep-alive,
//! shutdown. Decisions themselves are tested in `engine/policy.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::*;
use crate::config::{Config, RawConfig};

const KEY: &str = "test-key-0123456789abcdef";

/// A running endpoint on a free loopback port.
struct Fixture {
    addr: SocketAddr,
    engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Arc<crate::server::accept::Slots>>,
}

async fn start(settings: PolicySettings) -> Fixture {
    let config = Config::from_raw(RawConfig::default()).unwrap();
    let (engine, _alerts) = Engine::new(&config, Timestamp::now());
    let engine = Arc::new(engine);
    let key = ApiKey::new("X-API-Key", KEY).unwrap();
    let shared = Arc::new(Shared::new(engine.clone(), key, settings));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, "/policy".into(), shared, 8, stopped));
    Fixture {
        addr,
        engine,
        stop,
        task,
    }
}

/// One keep-alive HTTP/1.1 client connection.
struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        Client {
            rd: BufReader::new(rd),
            wr,
        }
    }

    /// Sends a request and reads the response: status and body.
    async fn send(
        &mut self,
        method: &str,
        target: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(key) = key {
            req.push_str(&format!("X-API-Key: {key}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.wr.write_all(req.as_bytes()).await.unwrap();
        self.read_response().await
    }

    async fn read_response(&mut self) -> (u16, String) {
        let mut status_line = String::new();
        self.rd.read_line(&mut status_line).await.unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("status line {status_line:?}"))
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.rd.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.rd.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    async fn allow(&mut self, body: &str) -> (u16, String) {
        self.send("POST", "/policy?command=allow", Some(KEY), body)
            .await
    }

    async fn report(&mut self, body: &str) -> (u16, String) {
        self.send("POST", "/policy?command=report", Some(KEY), body)
            .await
    }
}

fn attempt(login: &str, remote: &str, protocol: &str, pwhash: &str, success: bool) -> String {
    format!(
        r#"{{"device_id":"","login":"{login}","protocol":"{protocol}","pwhash":"{pwhash}","remote":"{remote}","session_id":"s1","success":{success},"policy_reject":false,"tls":false}}"#
    )
}

fn stat(e: &Engine, name: &str) -> u64 {
    e.stats
        .policy
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

#[tokio::test]
async fn a_brute_force_is_reported_then_refused_on_one_keep_alive_connection() {
    let f = start(PolicySettings {
        tarpit_after: 3,
        tarpit_after_ip: 0,
        tarpit_secs: 4,
        reject_message: None,
    })
    .await;
    let mut c = Client::connect(f.addr).await;
    let body = attempt("alice", "198.51.100.7", "imap", "0001", false);
    assert_eq!(
        c.allow(&body).await,
        (200, r#"{"status":0,"msg":""}"#.into())
    );
    for i in 1..=5 {
        let body = attempt("alice", "198.51.100.7", "imap", &format!("000{i}"), false);
        assert_eq!(
            c.report(&body).await,
            (200, r#"{"status":0,"msg":""}"#.into())
        );
        if i == 3 {
            assert_eq!(
                c.allow(&body).await,
                (
                    200,
                    r#"{"status":4,"msg":"tarpit after 3 failed logins"}"#.into()
                )
            );
        }
    }
    let (status, body) = c
        .allow(&attempt("alice", "192.0.2.1", "pop3", "0009", false))
        .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], -1);
    assert_eq!(
        v["msg"],
        "account temporarily locked after repeated authentication failures, try again later"
    );
    assert_eq!(stat(&f.engine, "report_fail"), 5);
    assert_eq!(stat(&f.engine, "rejected"), 1);
    assert_eq!(stat(&f.engine, "tarpitted"), 1);
    let _ = f.stop.send(true);
    let slots = f.task.await.unwrap();
    // The idle keep-alive connection closes at once on shutdown.
    let mut rest = Vec::new();
    assert_eq!(c.rd.read_to_end(&mut rest).await.unwrap(), 0);
    drop(c);
    slots.closed().await;
    assert_eq!(slots.open(), 0, "every connection closed");
}

#[tokio::test]
async fn a_missing_or_wrong_key_gets_401_and_is_counted() {
    let f = start(PolicySettings::default()).await;
    let mut c = Client::connect(f.addr).await;
    let body = attempt("bob", "198.51.100.8", "imap", "0001", false);
    for key in [None, Some("test-key-0123456789abcdeF"), Some("")] {
        let (status, reply) = c.send("POST", "/policy?command=report", key, &body).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(reply, r#"{"error":"missing or wrong API key"}"#);
    }
    assert_eq!(stat(&f.engine, "unauthorized"), 3);
    assert!(
        f.engine.state().account("bob").is_none(),
        "nothing recorded"
    );
    assert_eq!(
        c.report(&body).await.0,
        200,
        "the connection is still usable"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_with_the_reason() {
    let f = start(PolicySettings::default()).await;
    let mut c = Client::connect(f.addr).await;
    let cases = [
        (
            "/policy?command=allow",
            "{\"login\":",
            "malformed policy request: EOF while parsing",
        ),
        (
            "/policy?command=allow",
            "[\"alice\"]",
            "malformed policy request: expected a JSON object",
        ),
        (
            "/policy?command=deny",
            "{}",
            "unknown command \"deny\": expected allow or report",
        ),
        ("/policy", "{}", "no command in the query string"),
        (
            "/policy?command=report",
            r#"{"login":"carol"}"#,
            "a report needs `success`",
        ),
    ];
    for (target, body, want) in cases {
        let (status, reply) = c.send("POST", target, Some(KEY), body).await;
        assert_eq!(status, 400, "{target} {body}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(want), "{target} {body}: {error}");
    }
    assert_eq!(stat(&f.engine, "malformed"), cases.len() as u64);
    let big = format!("{{\"login\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    assert_eq!(
        c.allow(&big).await,
        (413, r#"{"error":"request body over 16384 bytes"}"#.into())
    );
    assert_eq!(stat(&f.engine, "malformed"), cases.len() as u64 + 1);
    // The rest of an oversized body is not read: the connection closes after the 413.
    let mut rest = Vec::new();
    assert_eq!(c.rd.read_to_end(&mut rest).await.unwrap(), 0);
    let mut c = Client::connect(f.addr).await;
    assert_eq!(
        c.allow("{}").await,
        (200, r#"{"status":0,"msg":""}"#.into())
    );
}

#[tokio::test]
async fn other_paths_and_methods_are_not_served() {
    let f = start(PolicySettings::default()).await;
    let mut c = Client::connect(f.addr).await;
    assert_eq!(
        c.send("POST", "/other?command=allow", Some(KEY), "{}")
            .await
            .0,
        404
    );
    assert_eq!(
        c.send("GET", "/policy?command=allow", Some(KEY), "")
            .await
            .0,
        405
    );
    assert_eq!(f.engine.stats.policy.allow.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn refused_and_internal_failures_are_not_wrong_passwords() {
    let f = start(PolicySettings::default()).await;
    let mut c = Client::connect(f.addr).await;
    let refused = r#"{"login":"dave","remote":"192.0.2.3","protocol":"imap","success":false,"policy_reject":true}"#;
    let internal = r#"{"login":"dave","remote":"192.0.2.3","protocol":"imap","success":false,"fail_type":"internal"}"#;
    let anonymous = r#"{"remote":"192.0.2.3","protocol":"imap","success":false}"#;
    for body in [refused, internal, anonymous] {
        assert_eq!(c.report(body).await.0, 200);
    }
    assert_eq!(stat(&f.engine, "report_refused"), 1);
    assert_eq!(stat(&f.engine, "report_internal"), 1);
    assert_eq!(stat(&f.engine, "report_anonymous"), 1);
    assert!(f.engine.state().account("dave").is_none());
    // An empty name is what the client typed: an attempt like any other, counted
    // against the address too.
    let empty = r#"{"login":"","remote":"192.0.2.3","protocol":"imap","success":false}"#;
    assert_eq!(c.report(empty).await.0, 200);
    assert!(f.engine.state().account("").is_some());
    let ip = "192.0.2.3".parse().unwrap();
    assert!(f.engine.state().ip(ip).is_some());
    // Dovecot 2.4's fail_type of a wrong password counts like 2.3's plain failure.
    let wrong = r#"{"login":"dave","remote":"192.0.2.3","protocol":"imap","success":false,"fail_type":"credentials"}"#;
    assert_eq!(c.report(wrong).await.0, 200);
    assert_eq!(
        f.engine
            .state()
            .account("dave")
            .unwrap()
            .totals
            .logins_failed,
        1
    );
}

#[test]
fn commands_come_from_the_query_string() {
    assert_eq!(command(Some("command=allow")), Ok(Command::Allow));
    assert_eq!(command(Some("site=a&command=report")), Ok(Command::Report));
    assert!(command(Some("command=")).is_err());
    assert!(command(None).is_err());
}
