//! The syslog sink against a real rsyslogd from Debian: alerts raised through real Exim
//! arrive over TLS (with a CA the test made, with and without a client certificate),
//! plain TCP and UDP, and rsyslog's own RFC 5424 parser reads their header and
//! structured data back; a sink that does not trust the receiver's certificate delivers
//! nothing and counts it; a TCP peer that accepts and never reads holds only its own
//! sink while verdicts flow, shown by counts.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::rsyslog::{Input, Received, Rsyslog};
use exim_access_e2e::tlsca::TestCa;
use exim_access_e2e::{Dialogue, Exim, Oracle, Via, World, paths, process};
use serde_json::Value;

/// How long anything may take to arrive.
const DEADLINE: Duration = Duration::from_secs(30);

/// The attacker's address (documentation range).
const ATTACKER: &str = "203.0.113.9";

/// An account name with the three characters RFC 5424 escapes in a PARAM-VALUE.
const HOSTILE: &str = "mallory \"x\" ]\\ y";

/// PRI of a high alert under the default facility: auth (4) × 8 + err (3).
const PRI_HIGH_AUTH: u16 = 35;

fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

fn path_str(p: &Path) -> String {
    toml_str(p.to_string_lossy())
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
        thread::sleep(Duration::from_millis(50));
    }
}

fn count(s: &Value, key: &str) -> u64 {
    s[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key}: {s}"))
}

/// Five wrong passwords for `user` through `exim -bh`: Exim answers 535 each time and
/// the fifth trips `failed_logins_account` (one alert).
fn wrong_passwords(exim: &Exim, user: &str) {
    for i in 0..5 {
        let s = exim.bh(ATTACKER, &Dialogue::auth_only(user, format!("guess-{i}")));
        s.assert_oracle_answered();
        assert_eq!(s.reply("AUTH").code, 535, "{}", s.transcript());
    }
}

/// The received message whose structured data names `account`.
fn for_account<'a>(got: &'a [Received], account: &str) -> &'a Received {
    got.iter()
        .find(|r| r.param("alert@32473", "account") == Some(account))
        .unwrap_or_else(|| panic!("no message for {account:?} among {got:#?}"))
}

/// This machine's name, as the sink's default HOSTNAME.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn alerts_through_exim_reach_rsyslog_over_tls_tcp_and_udp() {
    let world = World::new(&["alice"]);
    let ca = TestCa::create(&world.path("ca"));
    let rsyslog = Rsyslog::start(&world, &ca);
    let sinks = format!(
        "[[sinks]]\n\
         name = \"siem-tls\"\n\
         type = \"syslog\"\n\
         address = {tls}\n\
         transport = \"tls\"\n\
         ca_file = {ca}\n\
         hostname = \"mx1.example.org\"\n\
         group_secs = 0\n\
         \n\
         [[sinks]]\n\
         name = \"siem-mutual\"\n\
         type = \"syslog\"\n\
         address = {mutual}\n\
         transport = \"tls\"\n\
         ca_file = {ca}\n\
         cert_file = {cert}\n\
         key_file = {key}\n\
         server_name = \"localhost\"\n\
         facility = \"local4\"\n\
         app_name = \"mx-guard\"\n\
         group_secs = 0\n\
         \n\
         [[sinks]]\n\
         name = \"siem-tcp\"\n\
         type = \"syslog\"\n\
         address = {tcp}\n\
         transport = \"tcp\"\n\
         format = \"json\"\n\
         group_secs = 0\n\
         \n\
         [[sinks]]\n\
         name = \"siem-udp\"\n\
         type = \"syslog\"\n\
         address = {udp}\n\
         transport = \"udp\"\n\
         format = \"ecs\"\n\
         group_secs = 0\n",
        tls = toml_str(rsyslog.address(Input::Tls)),
        mutual = toml_str(rsyslog.address(Input::TlsClientCert)),
        tcp = toml_str(rsyslog.address(Input::Tcp)),
        udp = toml_str(rsyslog.address(Input::Udp)),
        ca = path_str(&ca.ca),
        cert = path_str(&ca.client_cert),
        key = path_str(&ca.client_key),
    );
    let oracle = Oracle::start_with(&world, &sinks);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    wrong_passwords(&exim, "alice");
    wrong_passwords(&exim, HOSTILE);

    let alerts = oracle.wait_for_alerts(2, DEADLINE);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    for name in ["siem-tls", "siem-mutual", "siem-tcp", "siem-udp"] {
        let s = wait_sink(&oracle, name, "both alerts delivered", |s| {
            count(s, "delivered") == 2
        });
        assert_eq!((count(&s, "failed"), count(&s, "dropped")), (0, 0), "{s}");
    }

    for input in Input::ALL {
        let got = rsyslog.wait_for(input, 2, DEADLINE);
        assert_eq!(got.len(), 2, "{input:?}: {got:#?}\n{}", rsyslog.log_text());
        for alert in &alerts {
            let account = alert["account"].as_str().unwrap();
            // The oracle shows an outsider's backslash doubled (text::escape_controls);
            // rsyslog undoes only RFC 5424's own escapes.
            let shown = account.replace('\\', "\\\\");
            let r = for_account(&got, &shown);
            assert_eq!(r.msgid, "failed_logins_account", "{r:#?}");
            assert_eq!(
                r.param("alert@32473", "rule"),
                Some("failed_logins_account")
            );
            assert_eq!(r.param("alert@32473", "severity"), Some("high"));
            assert_eq!(r.param("alert@32473", "ip"), Some(ATTACKER));
            assert_eq!(r.param("alert@32473", "protocol"), Some("smtp"));
            assert_eq!(r.param("alert@32473", "response"), Some("hold_account"));
            assert_eq!(r.param("alert@32473", "count"), Some("5"));
            let time = alert["time"].as_str().unwrap();
            assert_eq!(r.timestamp[..19], time[..19], "{r:#?}");
            assert!(r.procid.parse::<u32>().is_ok(), "{r:#?}");
            let summary = alert["summary"].as_str().unwrap();
            match input {
                Input::Tls => {
                    assert_eq!(r.pri, PRI_HIGH_AUTH);
                    assert_eq!(r.hostname, "mx1.example.org");
                    assert_eq!(r.app_name, "exim-access");
                    assert_eq!(r.msg, summary.replace('\\', "\\\\"));
                }
                Input::TlsClientCert => {
                    assert_eq!(r.pri, 20 * 8 + 3, "local4.err");
                    assert_eq!(r.app_name, "mx-guard");
                    assert_eq!(r.hostname, machine_name());
                }
                Input::Tcp => {
                    let doc: Value = serde_json::from_str(&r.msg)
                        .unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {r:#?}"));
                    assert_eq!(doc["account"], alert["account"], "{doc}");
                    assert_eq!(doc["summary"], alert["summary"], "{doc}");
                }
                Input::Udp => {
                    let doc: Value = serde_json::from_str(&r.msg)
                        .unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {r:#?}"));
                    assert_eq!(doc["user"]["name"], alert["account"], "{doc}");
                    assert_eq!(doc["event"]["kind"], "alert", "{doc}");
                }
            }
        }
    }
    // The hostile name arrived as data: no extra SD element, no cut parameter.
    let got = rsyslog.received(Input::Tls);
    for r in &got {
        assert_eq!(
            r.sd.as_object().map(|o| o.len()),
            Some(1),
            "one SD element: {r:#?}"
        );
    }
}

#[test]
fn a_tls_sink_that_does_not_trust_the_receiver_delivers_nothing() {
    let world = World::new(&["alice"]);
    let ca = TestCa::create(&world.path("ca"));
    let rsyslog = Rsyslog::start(&world, &ca);
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[[sinks]]\n\
             name = \"distrust\"\n\
             type = \"syslog\"\n\
             address = {mutual}\n\
             transport = \"tls\"\n\
             ca_file = {other}\n\
             retries = 1\n\
             group_secs = 0\n\
             \n\
             [[sinks]]\n\
             name = \"trust\"\n\
             type = \"syslog\"\n\
             address = {tls}\n\
             transport = \"tls\"\n\
             ca_file = {ca}\n\
             server_name = \"127.0.0.1\"\n\
             group_secs = 0\n",
            tls = toml_str(rsyslog.address(Input::Tls)),
            mutual = toml_str(rsyslog.address(Input::TlsClientCert)),
            other = path_str(&ca.other_ca),
            ca = path_str(&ca.ca),
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    wrong_passwords(&exim, "alice");

    let s = wait_sink(
        &oracle,
        "distrust",
        "the alert failed after its retry",
        |s| count(s, "failed") == 1,
    );
    assert_eq!(
        (count(&s, "delivered"), count(&s, "retried")),
        (0, 1),
        "{s}"
    );
    wait_sink(&oracle, "trust", "the alert delivered", |s| {
        count(s, "delivered") == 1
    });
    let got = rsyslog.wait_for(Input::Tls, 1, DEADLINE);
    assert_eq!(got.len(), 1, "the trusting sink's message: {got:#?}");
    assert_eq!(got[0].param("alert@32473", "account"), Some("alice"));
    assert!(
        rsyslog.received(Input::TlsClientCert).is_empty(),
        "nothing from the sink that did not trust the receiver"
    );
    let log = oracle.log_text();
    assert!(
        log.contains("TLS handshake failed"),
        "the log says why:\n{log}"
    );
    // The text of `ctl status` counts it too.
    let status = oracle.ctl(&["status"]);
    status.assert_success();
    let text = status.stdout_text();
    assert!(
        text.lines()
            .any(|l| l.contains("alert write errors") && l.split_whitespace().any(|w| w == "1")),
        "{text}"
    );

    // check-config: a client certificate without its key is refused, naming the sink;
    // once the settings hold together, it reads the TLS files as the sink would, and a
    // missing CA file is named too.
    let check = |name: &str, toml: String| {
        let config = world.path(name);
        std::fs::write(&config, toml).unwrap();
        let mut cmd = Command::new(paths::oracle_bin());
        cmd.arg("check-config").arg(&config);
        let out = process::run(cmd, b"", Duration::from_secs(30));
        assert!(!out.status.success(), "{}", out.stdout_text());
        format!("{}{}", out.stdout_text(), out.stderr_text())
    };
    let text = check(
        "half.toml",
        format!(
            "[[sinks]]\nname = \"half\"\ntype = \"syslog\"\naddress = \"[::1]:6514\"\n\
             transport = \"tls\"\ncert_file = {}\n",
            path_str(&ca.client_cert),
        ),
    );
    assert!(
        text.contains("sinks[0] (half)") && text.contains("cert_file and key_file go together"),
        "{text}"
    );
    let text = check(
        "missing.toml",
        format!(
            "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:6514\"\n\
             transport = \"tls\"\nca_file = {}\n",
            path_str(&world.path("ca/missing.pem")),
        ),
    );
    assert!(
        text.contains("siem") && text.contains("ca_file") && text.contains("missing.pem"),
        "{text}"
    );
}

/// A TCP peer that accepts every connection and never reads from any.
struct HungPeer {
    address: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HungPeer {
    fn start() -> HungPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        held.push(stream);
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HungPeer {
            address,
            connections,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HungPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_hung_syslog_peer_holds_only_its_own_sink() {
    // Every failed login trips a rule (threshold 1), each for its own account from its
    // own address, so each request raises one alert.
    const ALERTS: usize = 3000;
    const HUNG_QUEUE: u64 = 8;
    let world = World::new(&[]);
    let ca = TestCa::create(&world.path("ca"));
    let rsyslog = Rsyslog::start(&world, &ca);
    let hung = HungPeer::start();
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[rules.failed_logins_account]\n\
             threshold = 1\n\
             \n\
             [[sinks]]\n\
             name = \"alerts\"\n\
             type = \"file\"\n\
             queue_capacity = 100000\n\
             \n\
             [[sinks]]\n\
             name = \"hung\"\n\
             type = \"syslog\"\n\
             address = {hung}\n\
             transport = \"tcp\"\n\
             format = \"json\"\n\
             timeout_ms = 500\n\
             retries = 0\n\
             queue_capacity = {HUNG_QUEUE}\n\
             group_secs = 0\n\
             \n\
             [[sinks]]\n\
             name = \"central\"\n\
             type = \"syslog\"\n\
             address = {tls}\n\
             transport = \"tls\"\n\
             ca_file = {ca}\n\
             queue_capacity = 100000\n\
             group_secs = 0\n",
            hung = toml_str(&hung.address),
            tls = toml_str(rsyslog.address(Input::Tls)),
            ca = path_str(&ca.ca),
        ),
    );

    let mut answered = 0;
    for n in 0..ALERTS {
        let line = format!(
            "auth user=user{n} ip=10.{}.{}.{} result=fail pwhash=0001",
            n / 65536 % 256,
            n / 256 % 256,
            n % 256
        );
        if oracle.request(&line).as_deref() == Some("accept") {
            answered += 1;
        }
    }
    assert_eq!(answered, ALERTS, "every request got its verdict");
    assert!(oracle.ping());

    // The file sink and the TLS sink to rsyslog get every alert.
    let s = wait_sink(&oracle, "central", "every alert delivered", |s| {
        count(s, "delivered") == ALERTS as u64
    });
    assert_eq!((count(&s, "failed"), count(&s, "dropped")), (0, 0), "{s}");
    let got = rsyslog.wait_for(Input::Tls, ALERTS, DEADLINE);
    assert_eq!(got.len(), ALERTS, "{}", rsyslog.log_text());
    let mut accounts: Vec<&str> = got
        .iter()
        .filter_map(|r| r.param("alert@32473", "account"))
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    assert_eq!(accounts.len(), ALERTS, "each alert once");
    wait_sink(&oracle, "alerts", "every alert written", |s| {
        count(s, "delivered") == ALERTS as u64
    });

    // The hung sink: writes into the silent peer until its window is full, then one
    // times out (failed, the connection dropped), its queue fills and drops; every
    // alert is accounted for once it has drained.
    let s = wait_sink(&oracle, "hung", "failed and dropped, then drained", |s| {
        count(s, "failed") >= 1
            && count(s, "dropped") >= 1
            && count(s, "queued") == 0
            && count(s, "delivered") + count(s, "failed") + count(s, "dropped") == ALERTS as u64
    });
    eprintln!(
        "hung sink: {s}; {} connections",
        hung.connections.load(Ordering::Relaxed)
    );
    assert!(
        count(&s, "delivered") < ALERTS as u64,
        "the peer never read, yet every alert went: {s}"
    );
    assert!(
        hung.connections.load(Ordering::Relaxed) >= 2,
        "connected again after the timed-out write"
    );
}
