//! `[crowdsec]` against a real CrowdSec Local API (Debian's `crowdsec` 1.4.6, started by
//! the test on loopback with its own database: `tests/src/crowdsec.rs`), through real
//! Exim 4.96 and the Dovecot policy endpoint.
//!
//! * As a bouncer: a ban `cscli decisions add` makes (an address, a range, IPv6) refuses
//!   that client at connect, at AUTH in a session already open, and in Dovecot's
//!   `allow`; `cscli decisions delete` lets it in again; a short decision lapses; when
//!   the Local API is down the decisions known stay in force and the failures are
//!   counted in `ctl status`.
//! * As a machine: an address that sprays passwords through Exim is blocked by the
//!   oracle, and the block shows in `cscli decisions list` as a ban with the rule as its
//!   scenario; `ctl unblock` deletes it again.
//!
//! The oracle polls every second (`poll_secs = 1`); tests poll what they wait for with
//! a deadline, never sleep for a window.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::crowdsec::Crowdsec;
use exim_access_e2e::{
    Dialogue, Exim, HttpClient, Oracle, PASSWORD, POLICY_API_KEY, POLICY_PATH, Via, World,
};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

/// The `[crowdsec]` table for `lapi` with the bouncer key in `key`, then `extra` lines.
fn crowdsec_toml(lapi: &Crowdsec, key: &Path, extra: &str) -> String {
    format!(
        "[crowdsec]\nlapi_url = \"{}\"\nbouncer_key_file = \"{}\"\npoll_secs = 1\n{extra}\n",
        lapi.url(),
        key.display()
    )
}

/// Waits (bounded) until `ready`, else panics with `what` and the oracle's log.
fn wait_until(oracle: &Oracle, what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !ready() {
        assert!(
            Instant::now() < until,
            "{what}: not within {DEADLINE:?}\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Dovecot's `allow` for `user` from `ip`, asked of the policy endpoint.
fn allow(oracle: &Oracle, ip: &str, user: &str) -> Value {
    let mut http = HttpClient::connect(oracle.policy_port());
    let body = format!(r#"{{"login":"{user}","remote":"{ip}","protocol":"imap"}}"#);
    let answer = http.post(
        &format!("{POLICY_PATH}?command=allow"),
        Some(POLICY_API_KEY),
        &body,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

/// The greeting code and text an SMTP client from `ip` gets through Exim, and the AUTH
/// reply code when it got that far.
fn smtp(exim: &Exim, ip: &str) -> (u16, String, Option<u16>) {
    let session = exim.bh(ip, &Dialogue::auth_only("alice", PASSWORD));
    session.assert_oracle_answered();
    let greeting = session.greeting.as_ref().expect("a greeting or a refusal");
    let auth = session
        .replies("AUTH")
        .first()
        .copied()
        .flatten()
        .map(|r| r.code);
    (greeting.code, greeting.text(), auth)
}

fn status(oracle: &Oracle) -> Value {
    oracle.ctl_json(&["status"])["enrichment"]["crowdsec"].clone()
}

/// `cscli decisions add` bans an address, a range and an IPv6 address: each is refused
/// at connect through Exim, at AUTH in an SMTP session opened before the ban, and in
/// Dovecot's `allow`, with the decision's scenario in the text; others are not.
/// `cscli decisions delete` lets the address in again.
#[test]
fn local_api_bans_refuse_at_connect_auth_and_dovecot_allow() {
    let world = World::new(&["alice"]);
    let lapi = Crowdsec::start(&world);
    let key = lapi.bouncer_key_file("exim-access");
    let oracle = Oracle::start_with_policy(
        &world,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &crowdsec_toml(&lapi, &key, ""),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let banned = "192.0.2.50";
    let (code, _, auth) = smtp(&exim, banned);
    assert_eq!((code, auth), (220, Some(235)));
    wait_until(&oracle, "the first poll", || {
        status(&oracle)["polls"].as_u64().unwrap_or(0) >= 1
    });

    // A session opened before the ban: its AUTH is refused once the decision is read.
    let mut open = exim.live(banned);
    open.send("EHLO client.example").expect("a reply to EHLO");

    lapi.cscli(&["decisions", "add", "--ip", banned, "--duration", "1h"])
        .assert_success();
    wait_until(&oracle, "the ban read from the Local API", || {
        smtp(&exim, banned).0 != 220
    });
    let (code, text, auth) = smtp(&exim, banned);
    assert_eq!(code / 100, 4, "defer by default: {code} {text}");
    assert!(
        text.contains("CrowdSec decision manual 'ban' from 'cscli'"),
        "{text}"
    );
    assert_eq!(auth, None, "refused before AUTH");
    let auth = Dialogue::new().auth_plain("alice", PASSWORD);
    let reply = open.send(&auth.steps()[0].line).expect("a reply to AUTH");
    assert_eq!(reply.code, 435, "{reply}");
    assert!(reply.text().contains("CrowdSec decision"), "{reply}");
    open.finish();
    let verdict = allow(&oracle, banned, "alice");
    assert!(verdict["status"].as_i64().unwrap() < 0, "{verdict}");
    assert!(
        verdict["msg"]
            .as_str()
            .unwrap()
            .contains("CrowdSec decision"),
        "{verdict}"
    );
    // Another address is not concerned.
    assert_eq!(smtp(&exim, "192.0.2.51").2, Some(235));
    assert_eq!(allow(&oracle, "192.0.2.51", "alice")["status"], 0);

    // A range, and an IPv6 address.
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.51.100.0/24",
        "--duration",
        "1h",
        "--reason",
        "test range",
    ])
    .assert_success();
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "2001:db8::7",
        "--duration",
        "1h",
    ])
    .assert_success();
    wait_until(&oracle, "the range read from the Local API", || {
        allow(&oracle, "198.51.100.77", "alice")["status"] != 0
    });
    let (code, text, _) = smtp(&exim, "198.51.100.77");
    assert_eq!(code / 100, 4, "{text}");
    assert!(text.contains("CrowdSec decision test range"), "{text}");
    wait_until(&oracle, "the IPv6 ban read", || {
        allow(&oracle, "2001:db8::7", "alice")["status"] != 0
    });
    assert_eq!(smtp(&exim, "2001:db8::7").0 / 100, 4);
    assert_eq!(smtp(&exim, "2001:db8::8").2, Some(235));

    // Deleted: in again.
    lapi.cscli(&["decisions", "delete", "--ip", banned])
        .assert_success();
    wait_until(&oracle, "the deletion read from the Local API", || {
        smtp(&exim, banned).2 == Some(235)
    });
    assert_eq!(allow(&oracle, banned, "alice")["status"], 0);
    assert_eq!(smtp(&exim, "198.51.100.77").0 / 100, 4, "the range stays");
    let s = status(&oracle);
    assert_eq!(s["decisions"], 2, "{s}");
    assert!(s["hits"].as_u64().unwrap() >= 6, "{s}");
    assert_eq!(s["poll_errors"], 0, "{s}");
}

/// A decision lapses at its end; while the Local API is down the decisions known stay
/// in force (a ban keeps refusing) and each failed poll is counted; back up, changes
/// made meanwhile are read. `response = "deny"` refuses permanently.
#[test]
fn bans_lapse_and_stay_while_the_local_api_is_down() {
    let world = World::new(&["alice"]);
    let mut lapi = Crowdsec::start(&world);
    let key = lapi.bouncer_key_file("exim-access");
    let oracle = Oracle::start_with_policy(
        &world,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &crowdsec_toml(&lapi, &key, "response = \"deny\"\ntimeout_ms = 2000"),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    lapi.cscli(&["decisions", "add", "--ip", "192.0.2.60", "--duration", "4s"])
        .assert_success();
    lapi.cscli(&["decisions", "add", "--ip", "192.0.2.61", "--duration", "1h"])
        .assert_success();
    wait_until(&oracle, "both bans read", || {
        smtp(&exim, "192.0.2.61").0 != 220 && status(&oracle)["decisions"] == 2
    });
    let (code, text, _) = smtp(&exim, "192.0.2.61");
    assert_eq!(code / 100, 5, "deny: {code} {text}");
    wait_until(&oracle, "the four-second ban lapsed", || {
        smtp(&exim, "192.0.2.60").2 == Some(235)
    });

    lapi.stop();
    let errors = status(&oracle)["poll_errors"].as_u64().unwrap();
    wait_until(&oracle, "failed polls counted", || {
        status(&oracle)["poll_errors"].as_u64().unwrap() >= errors + 2
    });
    assert_eq!(smtp(&exim, "192.0.2.61").0 / 100, 5, "still banned");
    let s = status(&oracle);
    assert!(
        s["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{s}"
    );
    let shown = oracle.ctl(&["status"]);
    shown.assert_success();
    assert!(
        shown.stdout_text().contains("poll errors"),
        "{}",
        shown.stdout_text()
    );

    lapi.restart();
    lapi.cscli(&["decisions", "delete", "--ip", "192.0.2.61"])
        .assert_success();
    wait_until(&oracle, "the deletion read after the outage", || {
        smtp(&exim, "192.0.2.61").2 == Some(235)
    });
    let log = oracle.log_text();
    assert!(log.contains("the Local API answers again"), "{log}");
}

/// Ten wrong passwords on ten accounts from `ip` through Exim: the default
/// password_spraying rule blocks the address.
fn spray(exim: &Exim, ip: &str) {
    for i in 0..10 {
        let session = exim.bh(ip, &Dialogue::auth_only(format!("user{i}"), "guess"));
        session.assert_oracle_answered();
        assert_eq!(session.reply("AUTH").code, 535, "{}", session.transcript());
    }
    assert_ne!(smtp(exim, ip).0, 220, "{ip} blocked by the oracle");
}

fn alerts_of(oracle: &Oracle, rule: &str) -> Vec<Value> {
    oracle
        .alerts()
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

/// Waits (bounded) until the audit trail holds an `action` record whose reason has
/// `needle`, and returns it.
fn wait_for_record(world: &World, oracle: &Oracle, needle: &str) -> Value {
    let mut found = None;
    wait_until(oracle, &format!("an action record with {needle:?}"), || {
        let out = exim_access_e2e::oracle::audit(world, &["search", "--json"]);
        out.assert_success();
        found = out
            .stdout_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| {
                r["kind"] == "action" && r["reason"].as_str().is_some_and(|s| s.contains(needle))
            });
        found.is_some()
    });
    found.unwrap()
}

/// The accounts a sprayer tries, and alice.
fn users() -> Vec<String> {
    let mut users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    users.push("alice".into());
    users
}

/// An address spraying passwords through Exim is blocked by the oracle, and the block is
/// pushed to the Local API as the oracle's machine: `cscli decisions list` shows a ban
/// of the address with the rule as scenario and the block's time left, which comes back
/// through the oracle's own bouncer; an IPv6 sprayer's /64 is pushed as a range. `ctl
/// unblock` deletes the decision the oracle made and leaves one made by `cscli` on the
/// same address. Each step is audited.
#[test]
fn a_spraying_block_is_pushed_to_the_local_api_and_undone_on_unblock() {
    let users = users();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let world = World::new(&names);
    let lapi = Crowdsec::start(&world);
    let key = lapi.bouncer_key_file("exim-access");
    let machine = lapi.machine_file("exim-access", "a-long-machine-password-42");
    let oracle = Oracle::start_with_policy(
        &world,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &crowdsec_toml(
            &lapi,
            &key,
            &format!(
                "machine_id = \"exim-access\"\npassword_file = \"{}\"",
                machine.display()
            ),
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "203.0.113.66";
    spray(&exim, sprayer);

    let decisions = lapi.wait_decision(sprayer, true, DEADLINE);
    let pushed = decisions
        .iter()
        .find(|d| d["value"] == sprayer)
        .expect("the decision");
    assert_eq!(
        pushed["scenario"], "exim-access/password_spraying",
        "{pushed}"
    );
    assert_eq!(pushed["type"], "ban", "{pushed}");
    assert_eq!(pushed["scope"], "Ip", "{pushed}");
    assert_eq!(pushed["origin"], "crowdsec", "{pushed}");
    assert_eq!(pushed["machine_id"], "exim-access", "{pushed}");
    // About an hour: the rule's response_secs.
    let left = pushed["duration"].as_str().unwrap();
    assert!(left.starts_with("59m"), "{left}");
    let record = wait_for_record(&world, &oracle, &format!("crowdsec: block {sprayer}/32"));
    assert_eq!(record["result"], "ok", "{record}");
    // It comes back through the oracle's own bouncer.
    wait_until(&oracle, "the pushed ban read back", || {
        status(&oracle)["decisions"] == 1
    });
    assert!(
        allow(&oracle, sprayer, "alice")["msg"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "refused"
    );

    // An IPv6 address's block covers its /64: a range.
    spray(&exim, "2001:db8:5:6::66");
    let decisions = lapi.wait_decision("2001:db8:5:6::/64", true, DEADLINE);
    let range = decisions
        .iter()
        .find(|d| d["value"] == "2001:db8:5:6::/64")
        .unwrap();
    assert_eq!(range["scope"], "Range", "{range}");

    // Someone else's ban on the same address stays after the oracle's unblock.
    lapi.cscli(&["decisions", "add", "--ip", sprayer, "--duration", "1h"])
        .assert_success();
    oracle.ctl(&["unblock", sprayer]).assert_success();
    let until = Instant::now() + DEADLINE;
    loop {
        let all = lapi.decisions(true);
        let ours = all
            .iter()
            .filter(|d| d["value"] == sprayer && d["machine_id"] == "exim-access")
            .count();
        if ours == 0 {
            assert!(
                all.iter()
                    .any(|d| d["value"] == sprayer && d["origin"] == "cscli"),
                "the cscli ban stays: {all:#?}"
            );
            assert!(
                all.iter().any(|d| d["value"] == "2001:db8:5:6::/64"),
                "the other block stays: {all:#?}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "the pushed decision is still there: {all:#?}\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let record = wait_for_record(&world, &oracle, &format!("crowdsec: unblock {sprayer}/32"));
    assert_eq!(record["result"], "ok", "{record}");

    // An administrator's block of a network: a range with scenario exim-access/admin,
    // the reason in the alert's message.
    oracle
        .ctl(&[
            "block",
            "192.0.2.128/25",
            "--for",
            "10m",
            "--reason",
            "abuse desk",
        ])
        .assert_success();
    let decisions = lapi.wait_decision("192.0.2.128/25", true, DEADLINE);
    let admin = decisions
        .iter()
        .find(|d| d["value"] == "192.0.2.128/25")
        .unwrap();
    assert_eq!(admin["scenario"], "exim-access/admin", "{admin}");
    assert_eq!(admin["scope"], "Range", "{admin}");
    let left = admin["duration"].as_str().unwrap();
    assert!(left.starts_with("9m") || left.starts_with("10m"), "{left}");
    oracle.ctl(&["unblock", "192.0.2.128/25"]).assert_success();
    lapi.wait_decision("192.0.2.128/25", false, DEADLINE);
    assert!(alerts_of(&oracle, "action_failed").is_empty());
}

/// A machine whose password the Local API refuses: the push (without a bouncer: a
/// push-only `[crowdsec]`) is tried four times, then audited as failed and alerted with
/// the API's answer; the oracle's own block is in force all along.
#[test]
fn a_refused_push_is_retried_then_alerted() {
    let users = users();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let world = World::new(&names);
    let lapi = Crowdsec::start(&world);
    lapi.machine_file("exim-access", "the-password-the-api-knows");
    let wrong = world.path("crowdsec-wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[crowdsec]\nlapi_url = \"{}\"\nmachine_id = \"exim-access\"\npassword_file = \"{}\"\n",
            lapi.url(),
            wrong.display()
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "198.51.100.99";
    spray(&exim, sprayer);
    wait_until(&oracle, "an action_failed alert", || {
        !alerts_of(&oracle, "action_failed").is_empty()
    });
    let alert = alerts_of(&oracle, "action_failed").remove(0);
    let counts = &alert["counts"];
    assert_eq!(counts["action"], "crowdsec", "{alert}");
    assert_eq!(counts["step"], "block", "{alert}");
    assert_eq!(counts["attempts"], 4, "one try and three retries: {alert}");
    let error = counts["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("logging in as machine exim-access: 401")
            && error.contains("incorrect Username or Password"),
        "{alert}"
    );
    let record = wait_for_record(&world, &oracle, &format!("crowdsec: block {sprayer}/32"));
    assert_eq!(record["result"], "fail", "{record}");
    assert!(lapi.decisions(true).is_empty());
    assert_ne!(smtp(&exim, sprayer).0, 220, "the oracle's own block holds");
    assert!(
        oracle.ctl_json(&["status"])["enrichment"]
            .get("crowdsec")
            .is_none(),
        "no bouncer"
    );
}

/// A Local API that accepts connections and never answers (`timeout_ms` a minute): the
/// decision poll and the push hang on it, and verdicts go on all the while: an address
/// sprays and is blocked, and 500 requests are answered, each by the oracle's own
/// standing, while both requests are still open on the hung peer.
#[test]
fn a_hung_local_api_holds_no_verdict() {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let users = users();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let world = World::new(&names);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let (accepted, held) = (accepted.clone(), held.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                held.lock().unwrap().push(stream);
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let secret = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = world.path(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let key = secret("hung.key", "0123456789abcdef\n");
    let password = secret("hung.password", "pw\n");
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[crowdsec]\nlapi_url = \"http://127.0.0.1:{port}\"\nbouncer_key_file = \"{}\"\n\
             machine_id = \"exim-access\"\npassword_file = \"{}\"\ntimeout_ms = 60000\n",
            key.display(),
            password.display()
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    spray(&exim, "192.0.2.77");
    wait_until(&oracle, "the poll and the push on the hung peer", || {
        accepted.load(Ordering::SeqCst) >= 2
    });
    let mut answered = 0;
    for i in 0..500 {
        let ip = if i % 2 == 0 {
            "192.0.2.77"
        } else {
            "192.0.2.78"
        };
        let reply = oracle
            .request(&format!("connect ip={ip}"))
            .expect("an answer");
        if i % 2 == 0 {
            assert!(reply.starts_with("deny "), "{reply}");
        } else {
            assert_eq!(reply, "accept");
        }
        answered += 1;
    }
    assert_eq!(answered, 500);
    let s = status(&oracle);
    assert_eq!(
        (s["polls"].as_u64(), s["poll_errors"].as_u64()),
        (Some(0), Some(0)),
        "the first poll still waits: {s}"
    );
    assert!(alerts_of(&oracle, "action_failed").is_empty());
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one poll, one login");
}

/// A Local API over HTTPS with a certificate of a private CA: trusted through `ca_file`,
/// its bans refuse; an oracle trusting another CA reads nothing and counts each failed
/// poll with the certificate error.
#[test]
fn an_https_local_api_is_trusted_through_ca_file() {
    let world = World::new(&["alice"]);
    let ca = exim_access_e2e::tlsca::TestCa::create(&world.path("ca"));
    let lapi = Crowdsec::start_tls(&world, &ca);
    assert!(lapi.url().starts_with("https://"));
    let key = lapi.bouncer_key_file("exim-access");
    let oracle = Oracle::start_with_policy(
        &world,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &crowdsec_toml(&lapi, &key, &format!("ca_file = \"{}\"", ca.ca.display())),
    );
    lapi.cscli(&["decisions", "add", "--ip", "192.0.2.70", "--duration", "1h"])
        .assert_success();
    wait_until(&oracle, "the ban read over HTTPS", || {
        allow(&oracle, "192.0.2.70", "alice")["status"] != 0
    });
    assert_eq!(status(&oracle)["poll_errors"], 0);

    let other = World::new(&["alice"]);
    let wrong = Oracle::start_with_policy(
        &other,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &crowdsec_toml(
            &lapi,
            &key,
            &format!("ca_file = \"{}\"", ca.other_ca.display()),
        ),
    );
    wait_until(&wrong, "failed polls", || {
        status(&wrong)["poll_errors"].as_u64().unwrap_or(0) >= 2
    });
    let s = status(&wrong);
    assert_eq!(s["polls"], 0, "{s}");
    let error = s["last_error"]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(allow(&wrong, "192.0.2.70", "alice")["status"], 0);
}
