//! Hostile-client tests: listeners. What a client that only holds connections open, or
//! sends half a request, or floods the policy endpoint with wrong keys, does to the real
//! binary.
//!
//! Before the fix: 520 idle TCP connections filled the policy endpoint's 512 slots and a
//! real request timed out; 2,000 idle connections on the Exim socket made every real
//! request wait for the library's timeout; a half-sent line was held forever; the admin
//! socket queued connections beyond its cap without a word in the audit trail; every
//! wrong API key wrote a WARN line (9,000 requests, 9,000 lines).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use exim_access_e2e::{HttpClient, Oracle, POLICY_API_KEY, World, paths, process};
use serde_json::Value;

/// A bound for what must be quick; far below the library's and Dovecot's timeouts
/// would be too tight for a loaded test machine, far above them would prove nothing.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A body Dovecot sends for `allow`.
const ALLOW: &str = r#"{"device_id":"","local":"127.0.0.1","login":"alice","mech":"PLAIN","protocol":"imap","pwhash":"0945","remote":"192.0.2.10","rport":"41000","session_id":"s1","tls":""}"#;

/// One listener's counter from `ctl status --json`.
fn counter(oracle: &Oracle, listener: &str, name: &str) -> u64 {
    let status = oracle.ctl_json(&["status"]);
    let pairs = status["listeners"][listener]
        .as_array()
        .unwrap_or_else(|| panic!("no listeners.{listener} in {status}"));
    pairs
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_u64())
        .unwrap_or_else(|| panic!("no {listener} counter {name} in {status}"))
}

/// Polls `f` until it holds or `within` passes.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_connections_do_not_starve_the_policy_endpoint() {
    let world = World::new(&["alice"]);
    // The global cap is what is tested here: the head deadline is long enough that no
    // idle connection times out while the 520 are opened (on a slow machine they took
    // over a second, the default deadline, and the test found nothing to shed), and the
    // per-address cap (tested below) is the global one, so the slots fill and only
    // shedding can make room.
    let oracle = Oracle::start_with_policy(
        &world,
        "head_timeout_ms = 60000\nrequest_timeout_ms = 60000\nmax_connections_per_ip = 512\n",
        "",
    );
    let port = oracle.policy_port();
    // More idle connections than the endpoint's 512 slots, without the key.
    let idle: Vec<TcpStream> = (0..520)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let started = Instant::now();
    let mut client = HttpClient::connect(port);
    let r = client.post("/policy?command=allow", Some(POLICY_API_KEY), ALLOW);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], 0);
    assert!(took < PROMPTLY, "answered after {took:?}");
    let shed = counter(&oracle, "policy", "shed_idle");
    assert!(
        shed >= 9,
        "idle connections were closed to make room: {shed}"
    );
    drop(idle);
}

#[test]
fn one_address_cannot_take_every_policy_slot() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with_policy(
        &world,
        "max_connections_per_ip = 4\nhead_timeout_ms = 5000\n",
        "",
    );
    let port = oracle.policy_port();
    // Four connections in the middle of a head: busy, not idle.
    let busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"POST /policy?command=allow HTTP/1.1\r\n")
                .expect("write");
            s
        })
        .collect();
    eventually(PROMPTLY, "four busy connections", || {
        counter(&oracle, "policy", "accepted") >= 4
    });
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    fifth.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut buf = [0u8; 64];
    let n = fifth.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the fifth from the same address is closed at once");
    assert_eq!(counter(&oracle, "policy", "refused_per_peer"), 1);
    let log = oracle.log_text();
    assert!(
        log.contains("at its cap of 4 connections from one address"),
        "the refusal is logged:\n{log}"
    );
    drop(busy);
}

#[test]
fn idle_connections_do_not_delay_the_exim_socket() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let idle: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(oracle.exim_socket()).expect("connect"))
        .collect();
    let started = Instant::now();
    let reply = oracle.request("ping");
    let took = started.elapsed();
    assert_eq!(reply.as_deref(), Some("pong"));
    assert!(took < PROMPTLY, "answered after {took:?}");
    let shed = counter(&oracle, "exim", "shed_idle");
    assert!(shed >= 977, "idle connections made room: {shed}");
    // A shed connection is closed, and the library's way of reconnecting works.
    let mut first = idle.into_iter().next().unwrap();
    first.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        first.read(&mut buf).unwrap_or(0),
        0,
        "the idlest was closed"
    );
    assert_eq!(oracle.request("ping").as_deref(), Some("pong"));
}

#[test]
fn with_no_idle_connection_the_exim_socket_answers_defer_at_once() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with(
        &world,
        "max_connections = 2\nexim_request_timeout_ms = 5000\n",
    );
    // Two connections in the middle of a line: busy.
    let busy: Vec<UnixStream> = (0..2)
        .map(|_| {
            let mut s = UnixStream::connect(oracle.exim_socket()).expect("connect");
            s.write_all(b"auth user=a").expect("write");
            s
        })
        .collect();
    eventually(PROMPTLY, "two busy connections", || {
        counter(&oracle, "exim", "accepted") >= 2
    });
    let started = Instant::now();
    let reply = oracle.request("ping");
    assert!(started.elapsed() < PROMPTLY);
    let reply = reply.expect("a reply line");
    assert!(reply.starts_with("defer "), "{reply}");
    assert_eq!(counter(&oracle, "exim", "refused_full"), 1);
    drop(busy);
}

#[test]
fn a_half_sent_exim_line_is_answered_error_and_closed() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with(&world, "exim_request_timeout_ms = 300\n");
    let mut s = UnixStream::connect(oracle.exim_socket()).expect("connect");
    s.write_all(b"auth user=alice ip=192.0.2.1").expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).expect("a reply");
    assert!(
        line.starts_with("error request line not complete within 300 ms"),
        "{line:?}"
    );
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap_or(0), 0, "then closed");
    assert!(started.elapsed() < PROMPTLY);
    assert_eq!(counter(&oracle, "exim", "request_timeouts"), 1);
    // The connection's lifeline is gone, the socket is not.
    assert!(oracle.ping());
}

/// `access-oracle audit search --json` records of kind `admin`.
fn admin_records(world: &World) -> Vec<Value> {
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.args(["audit", "search", "--json", "--state-dir"])
        .arg(world.state_dir());
    let out = process::run(cmd, b"", Duration::from_secs(30));
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|r| r["kind"] == "admin")
        .collect()
}

#[test]
fn admin_refusals_are_answered_counted_and_audited() {
    let world = World::new(&["alice"]);
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("user nobody");
    let mut oracle = Oracle::start_with(
        &world,
        "admin_max_connections = 1\nadmin_request_timeout_ms = 300\n\
         admin_socket_mode = \"0660\"\nadmin_socket_group = \"nogroup\"\n\
         [admin]\nauditor_users = [\"nobody\"]\n",
    );
    // An auditor may not release: refused, and audited.
    let out = Command::new(paths::oracle_bin())
        .args(["ctl", "--socket"])
        .arg(oracle.admin_socket())
        .args(["release", "alice"])
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .expect("run ctl as nobody");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One connection sends half a request and holds the only slot.
    let mut half = UnixStream::connect(oracle.admin_socket()).expect("connect");
    half.write_all(b"{\"status\"").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    // Another is answered at once with the reason, and closed.
    let mut second = UnixStream::connect(oracle.admin_socket()).expect("connect");
    second.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut answer = String::new();
    let _ = second.read_to_string(&mut answer);
    assert!(
        answer.contains("over the cap of 1 admin connections"),
        "{answer:?}"
    );
    // The half request runs out of time: answered, closed.
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = half.read_to_string(&mut answer);
    assert!(
        answer.contains("request not complete within 300 ms"),
        "{answer:?}"
    );
    let status = oracle.ctl_json(&["status"]);
    let admin = &status["listeners"]["admin"];
    assert!(
        admin.to_string().contains("[\"refused_full\",1]"),
        "{admin}"
    );
    assert!(
        admin.to_string().contains("[\"request_timeouts\",1]"),
        "{admin}"
    );
    oracle.stop();
    let records = admin_records(&world);
    let reasons: Vec<&str> = records
        .iter()
        .filter(|r| r["action"] == "refused")
        .map(|r| r["reason"].as_str().unwrap_or(""))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("over the cap of 1 admin connections")),
        "{records:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("request not complete within 300 ms")),
        "{records:?}"
    );
    let by_nobody = format!("uid {} (nobody)", nobody.uid);
    assert!(
        records.iter().any(|r| r["admin"] == by_nobody.as_str()
            && r["reason"]
                .as_str()
                .unwrap_or("")
                .starts_with("release: needs the Admin role")),
        "the refused release is audited with its peer: {records:?}"
    );
    assert!(
        records
            .iter()
            .filter(|r| r["reason"]
                .as_str()
                .unwrap_or("")
                .contains("admin connections")
                || r["reason"].as_str().unwrap_or("").contains("within 300 ms"))
            .all(|r| r["admin"].as_str().unwrap_or("").starts_with("uid 0")),
        "the peer is named: {records:?}"
    );
}

#[test]
fn wrong_api_keys_are_counted_exactly_and_logged_sparingly() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with_policy(&world, "", "");
    let port = oracle.policy_port();
    let mut clients: Vec<HttpClient> = (0..4).map(|_| HttpClient::connect(port)).collect();
    for i in 0..9_000 {
        let key = if i % 2 == 0 {
            Some("a-wrong-key-0123456789")
        } else {
            None
        };
        let r = clients[i % 4].post("/policy?command=allow", key, ALLOW);
        assert_eq!(r.status, 401);
    }
    let status = oracle.ctl_json(&["status"]);
    let unauthorized = status["counters"]["policy"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p[0] == "unauthorized"))
        .and_then(|p| p[1].as_u64());
    assert_eq!(
        unauthorized,
        Some(9_000),
        "the counter keeps the exact number"
    );
    let log = oracle.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("wrong API key"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} warning lines for 9,000 wrong keys:\n{}",
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}
