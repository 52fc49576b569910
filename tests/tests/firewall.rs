//! The `[firewall]` action (issue 14 point 4) with the real nft, in a network namespace
//! each test creates ([`NetNs`]: `ip netns add`, deleted at the end even when the test
//! fails): the oracle runs inside it (`ip netns exec`), so the sets it fills are that
//! namespace's, never the host's. Blocks come from `password_spraying` tripped through
//! real Exim (`exim -bh` sessions from a chosen IPv4 or IPv6 address, which reach the
//! oracle through its socket file); what the kernel holds is read back with `nft -j
//! list set`, polled with a deadline.

use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::netns::{NetNs, SetElement};
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

const V4: &str = "inet access_oracle blocked";
const V6: &str = "inet access_oracle blocked_v6";

/// Three distinct accounts failing from one address make a spraying block.
const SPRAY_AT_3: &str = "[rules.password_spraying]\naccounts = 3\n";

/// One AUTH from `ip`; returns the AUTH reply code.
fn login(exim: &Exim, ip: &str, user: &str, password: &str) -> u16 {
    let session = exim.bh(ip, &Dialogue::auth_only(user, password));
    session.assert_oracle_answered();
    session.reply("AUTH").code
}

/// Whether alice's right password from `ip` is accepted (greeting and AUTH), where a
/// blocked address is refused at connect.
fn accepted(exim: &Exim, ip: &str) -> bool {
    let session = exim.bh(ip, &Dialogue::auth_only("alice", PASSWORD));
    session.greeting.as_ref().is_some_and(|g| g.code == 220)
        && session
            .replies("AUTH")
            .first()
            .copied()
            .flatten()
            .is_some_and(|r| r.code == 235)
}

/// Wrong passwords on three accounts from `ip`: a spraying block.
fn spray(oracle: &Oracle, exim: &Exim, ip: &str) {
    let before = alerts_of(oracle, "password_spraying").len();
    for i in 0..3 {
        assert_eq!(login(exim, ip, &format!("user{i}"), "guess"), 535);
    }
    wait_until(oracle, "a password_spraying alert", || {
        alerts_of(oracle, "password_spraying").len() > before
    });
}

fn alerts_of(oracle: &Oracle, rule: &str) -> Vec<Value> {
    oracle
        .alerts()
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
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
        thread::sleep(Duration::from_millis(20));
    }
}

/// The element for `value` in `set`, once it is there (bounded wait).
fn wait_for_element(ns: &NetNs, oracle: &Oracle, set: &str, value: &str) -> SetElement {
    let mut found = None;
    wait_until(oracle, &format!("{value} in {set}"), || {
        found = ns
            .set_elements(set)
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.value == value);
        found.is_some()
    });
    found.unwrap_or_else(|| unreachable!())
}

/// Waits (bounded) until `set` holds no element `value`.
fn wait_for_no_element(ns: &NetNs, oracle: &Oracle, set: &str, value: &str) {
    wait_until(oracle, &format!("{value} gone from {set}"), || {
        !values(ns, set).iter().any(|v| v == value)
    });
}

/// The values in `set` (none when it does not exist).
fn values(ns: &NetNs, set: &str) -> Vec<String> {
    ns.set_elements(set)
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.value)
        .collect()
}

/// The audit trail's `action` records, in order.
fn action_records(world: &World) -> Vec<Value> {
    let out = exim_access_e2e::oracle::audit(world, &["search", "--json"]);
    out.assert_success();
    out.stdout_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "action")
        .collect()
}

/// Waits (bounded) until the trail holds an `action` record whose reason has `needle`.
fn wait_for_record(world: &World, oracle: &Oracle, needle: &str) -> Value {
    let mut found = None;
    wait_until(oracle, &format!("an action record with {needle:?}"), || {
        found = action_records(world)
            .into_iter()
            .find(|r| r["reason"].as_str().is_some_and(|s| s.contains(needle)));
        found.is_some()
    });
    found.unwrap_or_default()
}

/// With `create = true` in an empty namespace: the first block makes the table and
/// both sets; a spraying block from an IPv4 address is an element with the block's
/// remaining time, one from an IPv6 address its /64 in the IPv6 set; `ctl unblock`
/// removes exactly the one it lifts; after a firewall reload that flushed everything,
/// the restarted oracle puts back what is still in force; an unblock of an element
/// someone already deleted is done, not failed.
#[test]
fn blocks_are_set_elements_until_ctl_unblock() {
    let ns = NetNs::new();
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start_in_netns(
        &world,
        ns.name(),
        &format!("[firewall]\ncreate = true\n{SPRAY_AT_3}"),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(ns.set_elements(V4), None, "nothing before the first block");

    let sprayer = "192.0.2.44";
    spray(&oracle, &exim, sprayer);
    let e = wait_for_element(&ns, &oracle, V4, sprayer);
    // response_secs is 3600 by default: the timeout is what was left of it.
    assert!((3590..=3600).contains(&e.timeout), "{e:?}");
    assert!(e.expires <= e.timeout && e.expires > 3500, "{e:?}");
    let record = wait_for_record(&world, &oracle, &format!("firewall: block {sprayer}/32"));
    assert_eq!(record["result"], "ok", "{record}");
    assert_eq!(record["action"], "block", "{record}");
    assert_eq!(record["ip"], sprayer, "{record}");
    // The set is made as documented.
    let listed = ns.nft(&["list", "set", "inet", "access_oracle", "blocked"]);
    assert!(
        listed.contains("type ipv4_addr") && listed.contains("flags interval,timeout"),
        "{listed}"
    );

    let sprayer6 = "2001:db8:7:8::44";
    let net6 = "2001:db8:7:8::/64";
    spray(&oracle, &exim, sprayer6);
    let e6 = wait_for_element(&ns, &oracle, V6, net6);
    assert!((3590..=3600).contains(&e6.timeout), "{e6:?}");
    assert!(!values(&ns, V4).iter().any(|v| v.contains(':')));
    let listed = ns.nft(&["list", "set", "inet", "access_oracle", "blocked_v6"]);
    assert!(listed.contains("type ipv6_addr"), "{listed}");

    let other = "198.51.100.44";
    spray(&oracle, &exim, other);
    wait_for_element(&ns, &oracle, V4, other);

    // ctl unblock lifts one block: its element goes, the others stay.
    oracle.ctl(&["unblock", sprayer]).assert_success();
    wait_for_no_element(&ns, &oracle, V4, sprayer);
    let record = wait_for_record(&world, &oracle, &format!("firewall: unblock {sprayer}/32"));
    assert_eq!(record["result"], "ok", "{record}");
    assert_eq!(values(&ns, V4), [other]);
    assert_eq!(values(&ns, V6), [net6]);
    assert!(accepted(&exim, sprayer), "unblocked");

    // A firewall reload that flushes the whole ruleset takes the sets away; the oracle,
    // restarted, makes them again with the blocks still in force and their time left.
    ns.nft(&["flush", "ruleset"]);
    assert_eq!(ns.set_elements(V4), None);
    oracle.restart();
    let back = wait_for_element(&ns, &oracle, V4, other);
    assert!(back.timeout <= 3600 && back.timeout > 3500, "{back:?}");
    wait_for_element(&ns, &oracle, V6, net6);
    assert_eq!(values(&ns, V4), [other], "the unblocked address stays out");

    // Deleted by hand before the unblock: the unblock is done all the same.
    ns.nft(&[
        "delete",
        "element",
        "inet",
        "access_oracle",
        "blocked_v6",
        "{",
        net6,
        "}",
    ]);
    oracle.ctl(&["unblock", sprayer6]).assert_success();
    let record = wait_for_record(&world, &oracle, &format!("firewall: unblock {net6}"));
    assert_eq!(record["result"], "ok", "{record}");
    assert!(alerts_of(&oracle, "action_failed").is_empty());
    assert_eq!(values(&ns, V6), Vec::<String>::new());
}

/// A short block: its element carries the few seconds and the kernel removes it when
/// they are over, with nothing sent by the oracle (the element's timeout ends it).
#[test]
fn a_short_block_expires_from_the_set_by_itself() {
    let ns = NetNs::new();
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_in_netns(
        &world,
        ns.name(),
        &format!("[firewall]\ncreate = true\n{SPRAY_AT_3}response_secs = 4\n"),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "203.0.113.44";
    spray(&oracle, &exim, sprayer);
    let e = wait_for_element(&ns, &oracle, V4, sprayer);
    assert!((1..=4).contains(&e.timeout), "{e:?}");
    let sprayer6 = "2001:db8:9::44";
    spray(&oracle, &exim, sprayer6);
    let e6 = wait_for_element(&ns, &oracle, V6, "2001:db8:9::/64");
    assert!((1..=4).contains(&e6.timeout), "{e6:?}");

    wait_for_no_element(&ns, &oracle, V4, sprayer);
    wait_for_no_element(&ns, &oracle, V6, "2001:db8:9::/64");
    // The sets stay, empty.
    assert_eq!(ns.set_elements(V4), Some(vec![]));
    // The oracle's block ended too, and it sent no unblock for it.
    wait_until(&oracle, "the block's end in the oracle", || {
        accepted(&exim, sprayer)
    });
    let records = action_records(&world);
    assert!(
        records
            .iter()
            .all(|r| r["action"] == "block" && r["result"] == "ok"),
        "{records:?}"
    );
    assert_eq!(records.len(), 2, "{records:?}");
}

/// The rule file docs/RESPONSES.md gives, loaded as an administrator would (twice: a
/// reload keeps the elements), with `create = false`: the oracle fills its sets, and
/// its chain drops a TCP connection to the SMTP port from the blocked address while
/// another address connects.
#[test]
fn the_documented_rule_file_drops_what_the_oracle_blocks() {
    let ns = NetNs::new();
    let ruleset = documented_ruleset();
    ns.nft_script(&ruleset);
    ns.nft_script(&ruleset);
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_in_netns(&world, ns.name(), &format!("[firewall]\n{SPRAY_AT_3}"));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "192.0.2.45";
    let neighbour = "192.0.2.46";
    spray(&oracle, &exim, sprayer);
    wait_for_element(&ns, &oracle, V4, sprayer);
    ns.nft_script(&ruleset);
    assert_eq!(
        values(&ns, V4),
        [sprayer],
        "reloading the rule file keeps the elements"
    );
    let chain = ns.nft(&["list", "chain", "inet", "access_oracle", "input"]);
    assert_eq!(
        chain.matches(" drop").count(),
        2,
        "one copy of each rule:\n{chain}"
    );

    for addr in [sprayer, neighbour] {
        ns.run(
            "ip",
            &["addr", "add", &format!("{addr}/32"), "dev", "lo"],
            b"",
        )
        .assert_success();
    }
    let out = ns.run("python3", &["-c", CONNECT_PROBE, sprayer, neighbour], b"");
    out.assert_success();
    assert_eq!(
        out.stdout_text(),
        format!("{sprayer} dropped\n{neighbour} connected\n"),
        "{}",
        out.stderr_text()
    );
}

/// Listens on port 25 and connects to it from each address given (bound as the
/// source): `ADDRESS connected`, or `ADDRESS dropped` when nothing answered in 1 s.
const CONNECT_PROBE: &str = r#"
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 25))
server.listen(8)
for source in sys.argv[1:]:
    client = socket.socket()
    client.settimeout(1.0)
    client.bind((source, 0))
    try:
        client.connect(("127.0.0.1", 25))
        print(source, "connected")
    except socket.timeout:
        print(source, "dropped")
    client.close()
"#;

/// The nftables rule file in docs/RESPONSES.md (the fenced block that defines the
/// oracle's table).
fn documented_ruleset() -> String {
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/RESPONSES.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    text.split("```")
        .find(|block| block.trim_start().starts_with("table inet access_oracle {"))
        .unwrap_or_else(|| panic!("{} has no rule file for the sets", doc.display()))
        .to_string()
}

/// `create = false` and no set: every step fails with nft's words and the hint, is
/// retried, given up, recorded as failed, and an alert says so; the block itself is in
/// force in the oracle all the same.
#[test]
fn a_missing_set_fails_retries_and_alerts() {
    let ns = NetNs::new();
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_in_netns(&world, ns.name(), &format!("[firewall]\n{SPRAY_AT_3}"));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "198.51.100.45";
    spray(&oracle, &exim, sprayer);
    let refused = exim.bh(sprayer, &Dialogue::auth_only("alice", PASSWORD));
    let greeting = refused.greeting.as_ref().expect("a greeting or refusal");
    assert_eq!(greeting.code / 100, 5, "{}", refused.transcript());

    wait_until(&oracle, "an action_failed alert", || {
        !alerts_of(&oracle, "action_failed").is_empty()
    });
    let alert = alerts_of(&oracle, "action_failed").remove(0);
    assert_eq!(alert["ip"], sprayer, "{alert}");
    let counts = &alert["counts"];
    assert_eq!(counts["action"], "firewall", "{alert}");
    assert_eq!(counts["step"], "block", "{alert}");
    assert_eq!(counts["attempts"], 4, "one try and three retries: {alert}");
    let error = counts["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "nft add element inet access_oracle blocked {{ {sprayer} timeout "
        )) && error.contains("No such file or directory")
            && error.contains("set create = true"),
        "{alert}"
    );
    let record = wait_for_record(&world, &oracle, &format!("firewall: block {sprayer}/32"));
    assert_eq!(record["result"], "fail", "{record}");
    assert!(
        oracle
            .log_text()
            .contains("external action failed; retrying")
    );
    assert_eq!(ns.set_elements(V4), None, "nothing was created");
}

/// `ctl block` of a network: one interval element; blocked again for longer, the
/// element's timeout is the new one (the transaction replaces it). An address inside
/// that network blocked on its own is refused by nft (no overlapping intervals in a
/// set): the step fails, is retried and raises an alert naming the overlap, as
/// docs/RESPONSES.md says.
#[test]
fn ctl_block_of_a_network_extends_and_an_overlap_alerts() {
    let ns = NetNs::new();
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_in_netns(&world, ns.name(), "[firewall]\ncreate = true\n");
    let net = "198.51.100.0/24";
    oracle
        .ctl(&["block", net, "--for", "2m", "--reason", "test"])
        .assert_success();
    let e = wait_for_element(&ns, &oracle, V4, net);
    assert!((110..=120).contains(&e.timeout), "{e:?}");
    oracle
        .ctl(&["block", net, "--for", "10m", "--reason", "test again"])
        .assert_success();
    wait_until(&oracle, "the element's longer timeout", || {
        ns.set_elements(V4)
            .unwrap_or_default()
            .iter()
            .any(|e| e.value == net && (590..=600).contains(&e.timeout))
    });
    assert_eq!(values(&ns, V4), [net]);

    oracle
        .ctl(&["block", "198.51.100.7", "--for", "1h"])
        .assert_success();
    wait_until(&oracle, "an action_failed alert", || {
        !alerts_of(&oracle, "action_failed").is_empty()
    });
    let alert = alerts_of(&oracle, "action_failed").remove(0);
    let error = alert["counts"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("interval overlaps with an existing one")
            && error.contains("in `add element inet access_oracle blocked { 198.51.100.7 timeout"),
        "{alert}"
    );
    assert_eq!(values(&ns, V4), [net], "the network's element is untouched");
}
