//! The webhook sink against a real HTTPS receiver on loopback, with a test CA made by
//! the test: alerts raised through real Exim arrive signed, each with its delivery id
//! (the same on a retry); a receiver behind a CA the oracle does not trust fails and is
//! counted; a hung receiver holds only its own sink while verdicts flow and another
//! webhook gets every alert (shown by counts); the Slack and Splunk HEC bodies as a
//! receiver gets them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use exim_access_e2e::https_receiver::Request;
use exim_access_e2e::tlsca::TestCa;
use exim_access_e2e::{Dialogue, Exim, HttpsReceiver, Oracle, Via, World};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// How long a test waits for an effect (polling, never a fixed sleep).
const DEADLINE: Duration = Duration::from_secs(30);

const SECRET: &str = "e2e-webhook-shared-secret";

/// A TOML basic string.
fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

fn path_str(p: &Path) -> String {
    toml_str(p.to_string_lossy())
}

/// The secret in a 0600 file, with the final newline `echo` leaves.
fn secret_file(world: &World) -> std::path::PathBuf {
    let path = world.path("webhook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// What a receiver computes: `sha256=` and the HMAC-SHA256 of the body it got.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One sink's counters from `ctl --json status`.
fn sink(oracle: &Oracle, name: &str) -> Value {
    let status = oracle.ctl_json(&["status"]);
    status["counters"]["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no sink {name} in ctl status: {status}"))
}

/// Waits (bounded) until `check` holds for the sink's counters; returns them.
fn wait_sink(oracle: &Oracle, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let s = sink(oracle, name);
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "sink {name}: {what}; counters: {s}\n{}",
            oracle.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(s: &Value, key: &str) -> u64 {
    s[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key}: {s}"))
}

/// Five wrong passwords for `user` from `ip` on the Exim socket, each answered: the
/// fifth trips `failed_logins_account` (one alert).
fn brute_force(oracle: &Oracle, user: &str, ip: &str) {
    for i in 0..5 {
        let line = format!("auth user={user} ip={ip} result=fail pwhash=0{i:03}");
        assert_eq!(
            oracle.request(&line).as_deref(),
            Some("accept"),
            "{line}: every request gets its verdict"
        );
    }
}

/// The delivery ids of `requests`.
fn ids(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.header("X-Access-Delivery")
                .unwrap_or_else(|| panic!("no X-Access-Delivery: {r:?}"))
                .to_string()
        })
        .collect()
}

#[test]
fn alerts_through_exim_arrive_signed_with_one_id_per_alert() {
    let world = World::new(&["alice", "bob"]);
    let ca = TestCa::create(&world.path("ca"));
    let receiver = HttpsReceiver::start(&ca);
    // The first request is answered 500: the sink tries it again, under the same id.
    receiver.fail_next(1, 500);
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[[sinks]]\n\
             name = \"hook\"\n\
             type = \"webhook\"\n\
             url = {}\n\
             format = \"json\"\n\
             ca_file = {}\n\
             secret_file = {}\n\
             group_secs = 0\n",
            toml_str(receiver.url("/hook?token=e2e")),
            path_str(&ca.ca),
            path_str(&secret_file(&world)),
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    for (user, ip) in [("alice", "192.0.2.21"), ("bob", "192.0.2.22")] {
        for i in 1..=5 {
            let session = exim.bh(ip, &Dialogue::auth_only(user, format!("wrong-{i}")));
            session.assert_oracle_answered();
            assert_eq!(session.reply("AUTH").code, 535, "{}", session.transcript());
        }
    }
    let alerts = oracle.wait_for_alerts(2, DEADLINE);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");

    let requests = receiver.wait_for(3, DEADLINE);
    assert_eq!(requests.len(), 3, "{requests:#?}\n{}", oracle.log_text());
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/hook?token=e2e");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(
            r.header("X-Access-Signature"),
            Some(expected_signature(&r.body).as_str()),
            "the signature is the HMAC of the exact body under the shared secret"
        );
    }
    // The retried delivery: same body, same id; then the second alert under its own.
    assert_eq!(
        (
            requests[0].answered,
            requests[1].answered,
            requests[2].answered
        ),
        (500, 200, 200)
    );
    assert_eq!(requests[0].body, requests[1].body);
    let ids = ids(&requests);
    assert_eq!(ids[0], ids[1], "a retry keeps its delivery id");
    assert_ne!(ids[1], ids[2], "each alert has its own delivery id");
    assert!(
        ids.iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())),
        "{ids:?}"
    );
    // Each body is the alert exactly as alerts.jsonl holds it.
    assert_eq!(requests[1].json(), alerts[0]);
    assert_eq!(requests[2].json(), alerts[1]);
    assert_eq!(alerts[0]["account"], "alice");
    assert_eq!(alerts[1]["account"], "bob");

    let s = wait_sink(&oracle, "hook", "both delivered", |s| {
        count(s, "delivered") == 2
    });
    assert_eq!((count(&s, "failed"), count(&s, "retried")), (0, 1), "{s}");
    assert_eq!(s["type"], "webhook");
    assert!(
        !oracle.log_text().contains("token=e2e"),
        "the URL's query is never logged:\n{}",
        oracle.log_text()
    );
}

#[test]
fn a_receiver_the_oracle_does_not_trust_fails_and_is_counted() {
    let world = World::new(&[]);
    let ca = TestCa::create(&world.path("ca"));
    let receiver = HttpsReceiver::start(&ca);
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[[sinks]]\n\
             name = \"untrusted\"\n\
             type = \"webhook\"\n\
             url = {}\n\
             ca_file = {}\n\
             retries = 1\n\
             timeout_ms = 5000\n\
             group_secs = 0\n",
            toml_str(receiver.url("/hook?token=SECRETTOKEN")),
            path_str(&ca.other_ca),
        ),
    );
    brute_force(&oracle, "carol", "198.51.100.7");
    let s = wait_sink(&oracle, "untrusted", "failed once", |s| {
        count(s, "failed") == 1
    });
    assert_eq!(
        (count(&s, "delivered"), count(&s, "retried")),
        (0, 1),
        "{s}"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing passed the handshake"
    );
    assert_eq!(
        receiver.handshake_failures(),
        2,
        "the try and the retry each refused the certificate"
    );
    let log = oracle.log_text();
    assert!(
        log.contains("not delivered; given up") && log.contains("certificate"),
        "the failure names the certificate:\n{log}"
    );
    assert!(!log.contains("SECRETTOKEN"), "no token in the log:\n{log}");
    // The alert itself is kept by the file sink whatever the webhook did.
    assert_eq!(oracle.alerts().len(), 1);
}

#[test]
fn a_hung_receiver_holds_only_its_own_sink() {
    const ACCOUNTS: usize = 30;
    const STUCK_QUEUE: u64 = 4;
    let world = World::new(&[]);
    let ca = TestCa::create(&world.path("ca"));
    let hung = HttpsReceiver::hanging(&ca);
    let healthy = HttpsReceiver::start(&ca);
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[[sinks]]\n\
             name = \"stuck\"\n\
             type = \"webhook\"\n\
             url = {}\n\
             ca_file = {ca}\n\
             timeout_ms = 600000\n\
             retries = 0\n\
             queue_capacity = {STUCK_QUEUE}\n\
             group_secs = 0\n\
             \n\
             [[sinks]]\n\
             name = \"healthy\"\n\
             type = \"webhook\"\n\
             url = {}\n\
             ca_file = {ca}\n\
             group_secs = 0\n",
            toml_str(hung.url("/stuck")),
            toml_str(healthy.url("/healthy")),
            ca = path_str(&ca.ca),
        ),
    );
    // Every one of the 150 requests gets its verdict while the stuck sink hangs.
    for n in 0..ACCOUNTS {
        brute_force(
            &oracle,
            &format!("user{n}"),
            &format!("198.51.100.{}", n + 1),
        );
    }
    assert!(oracle.ping(), "still answering");

    // The file sink and the healthy webhook get every alert.
    let alerts = oracle.wait_for_alerts(ACCOUNTS, DEADLINE);
    assert_eq!(alerts.len(), ACCOUNTS);
    let got = healthy.wait_for(ACCOUNTS, DEADLINE);
    assert_eq!(got.len(), ACCOUNTS, "{}", oracle.log_text());
    let mut unique = ids(&got);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ACCOUNTS, "one id per alert");
    let s = wait_sink(&oracle, "healthy", "every alert delivered", |s| {
        count(s, "delivered") == ACCOUNTS as u64
    });
    assert_eq!(count(&s, "failed"), 0, "{s}");
    wait_sink(&oracle, "alerts", "every alert written", |s| {
        count(s, "delivered") == ACCOUNTS as u64
    });

    // The stuck sink: one request in flight on the one connection, its queue full,
    // the rest dropped; nothing delivered, nothing failed (it is still waiting).
    let s = wait_sink(&oracle, "stuck", "its queue full and dropping", |s| {
        count(s, "queued") == STUCK_QUEUE && count(s, "dropped") > 0
    });
    let (queued, dropped) = (count(&s, "queued"), count(&s, "dropped"));
    assert_eq!((count(&s, "delivered"), count(&s, "failed")), (0, 0), "{s}");
    assert!(
        queued + dropped < ACCOUNTS as u64,
        "some alert is in flight: {s}"
    );
    assert_eq!(
        hung.connections(),
        1,
        "one request hangs; no other was tried"
    );
    assert!(hung.requests().is_empty());
    // Still answering, and still counting what it cannot hold.
    brute_force(&oracle, "late", "198.51.100.200");
    wait_sink(&oracle, "stuck", "one more dropped", |s| {
        count(s, "dropped") == dropped + 1
    });
    assert_eq!(healthy.wait_for(ACCOUNTS + 1, DEADLINE).len(), ACCOUNTS + 1);
}

#[test]
fn slack_and_splunk_hec_bodies_as_a_receiver_gets_them() {
    let world = World::new(&[]);
    let ca = TestCa::create(&world.path("ca"));
    let receiver = HttpsReceiver::start(&ca);
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[[sinks]]\n\
             name = \"chat\"\n\
             type = \"webhook\"\n\
             url = {}\n\
             format = \"slack\"\n\
             ca_file = {ca}\n\
             group_secs = 0\n\
             \n\
             [[sinks]]\n\
             name = \"splunk\"\n\
             type = \"webhook\"\n\
             url = {}\n\
             format = \"splunk_hec\"\n\
             headers = {{ Authorization = \"Splunk e2e-hec-token\" }}\n\
             ca_file = {ca}\n\
             group_secs = 0\n",
            toml_str(receiver.url("/services/T0/B0/chat-hook")),
            toml_str(receiver.url("/services/collector/event")),
            ca = path_str(&ca.ca),
        ),
    );
    // An account name with Slack markup in it (`<!channel>` would ping everyone).
    brute_force(&oracle, "<!channel>&co", "203.0.113.50");
    let alerts = oracle.wait_for_alerts(1, DEADLINE);
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    let requests = receiver.wait_for(2, DEADLINE);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let by_path = |p: &str| {
        requests
            .iter()
            .find(|r| r.target == p)
            .unwrap_or_else(|| panic!("no request to {p}: {requests:#?}"))
    };

    let chat = by_path("/services/T0/B0/chat-hook");
    assert_eq!(chat.header("Content-Type"), Some("application/json"));
    assert!(
        chat.header("X-Access-Signature").is_none(),
        "no secret_file"
    );
    let text = chat.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with(
            &format!("{}\n", alert["summary"].as_str().unwrap())
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
        "{text}"
    );
    assert!(
        text.contains("Account:   &lt;!channel&gt;&amp;co"),
        "{text}"
    );
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains("Rule:      failed_logins_account"), "{text}");

    let hec = by_path("/services/collector/event");
    assert_eq!(hec.header("Authorization"), Some("Splunk e2e-hec-token"));
    let event = hec.json();
    assert_eq!(event["source"], "exim-access");
    assert_eq!(event["sourcetype"], "exim-access:alert");
    assert!(!event["host"].as_str().unwrap().is_empty(), "{event}");
    assert_eq!(event["event"], *alert);
    let when: jiff::Timestamp = alert["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        event["time"].as_f64().unwrap().floor() as i64,
        when.as_second()
    );
    for name in ["chat", "splunk"] {
        wait_sink(&oracle, name, "delivered", |s| count(s, "delivered") == 1);
    }
}
