//! Detection through real Exim 4.96: GeoIP/ASN enrichment, baselines and the rules of
//! issue 4, each with its negative case.
//!
//! Every test writes its own small `.mmdb` files (crate `geo-fixtures`: the
//! documentation ranges mapped to Berlin, New York, Paris, Sydney and London) and runs
//! `exim -bh <address>` sessions on the shipped configuration, so the oracle sees
//! logins from any of those places. Past logins (ten minutes or twenty hours ago) come
//! from an Exim mainlog the oracle follows from its beginning: the oracle learns them on
//! the log's own clock, as it would on a real server.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World};
use serde_json::Value;

/// Berlin, DE, AS64500.
const BERLIN: &str = "192.0.2.10";
/// New York, US, AS64501.
const NEW_YORK: &str = "198.51.100.7";
/// Paris, FR, AS64502 (a mobile carrier).
const PARIS_MOBILE: &str = "203.0.113.5";
/// Sydney, AU, AS64502 (the same mobile carrier).
const SYDNEY_MOBILE: &str = "203.0.113.200";

const DEADLINE: Duration = Duration::from_secs(20);

/// Writes the test databases into the world and returns the `[geoip]` table.
fn geoip_toml(world: &World) -> String {
    let city = world.path("geo/city.mmdb");
    let asn = world.path("geo/asn.mmdb");
    fs::create_dir_all(city.parent().unwrap()).unwrap();
    geo_fixtures::write_city_db(&city).unwrap();
    geo_fixtures::write_asn_db(&asn).unwrap();
    format!(
        "[geoip]\ncity_db = \"{}\"\nasn_db = \"{}\"\nreload_check_secs = 1\n",
        city.display(),
        asn.display()
    )
}

/// Learning switched off: every account knows what it is after one login.
const LEARN_AT_ONCE: &str = "[baselines]\nlearning_secs = 0\nlearning_logins = 1\n";

/// One AUTH from `ip`; returns the AUTH reply code.
fn login(exim: &Exim, ip: &str, user: &str, password: &str) -> u16 {
    let session = exim.bh(ip, &Dialogue::auth_only(user, password));
    session.assert_oracle_answered();
    session.reply("AUTH").code
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

fn baseline(oracle: &Oracle, user: &str) -> Value {
    oracle.ctl_json(&["account", user, "--baseline"])
}

/// An Exim mainlog line for a message `user` sent from `ip`, `ago` before now (Exim
/// logs local time).
fn past_arrival(user: &str, ip: &str, ago: Duration, n: usize) -> String {
    let when = jiff::Zoned::now() - jiff::SignedDuration::try_from(ago).unwrap();
    format!(
        "{} 1tQx{n:02}-000001-AB <= {user}@example.org H=(pc) [{ip}]:40000 P=esmtpsa A=plain_server:{user} S=1234 id=past{n}@example.org for bob@example.net\n",
        when.strftime("%Y-%m-%d %H:%M:%S")
    )
}

/// A `[[sources]]` table following `log` from its beginning.
fn source_toml(log: &Path) -> String {
    format!(
        "[[sources]]\npath = \"{}\"\nformat = \"exim\"\nstart_at = \"beginning\"\npoll_secs = 1\n",
        log.display()
    )
}

/// Starts an oracle that has learnt one login of `user` from `ip`, `ago` before now.
fn oracle_with_past_login(world: &World, user: &str, ip: &str, ago: Duration) -> Oracle {
    let log = world.path("history/mainlog");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(&log, past_arrival(user, ip, ago, 1)).unwrap();
    let oracle = Oracle::start_with(
        world,
        &format!("{}{}", geoip_toml(world), source_toml(&log)),
    );
    wait_until(&oracle, "the past login is learnt", || {
        baseline(&oracle, user)["logins"] == 1
    });
    oracle
}

/// Berlin, then New York ten minutes later: impossible travel (alert), and the login
/// itself still succeeds (the rule's default response is an alert).
#[test]
fn berlin_then_new_york_ten_minutes_later_is_impossible_travel() {
    let world = World::new(&["alice"]);
    let oracle = oracle_with_past_login(&world, "alice", BERLIN, Duration::from_secs(600));
    assert_eq!(baseline(&oracle, "alice")["countries"][0]["country"], "DE");
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, NEW_YORK, "alice", PASSWORD), 235);
    wait_until(&oracle, "an impossible_travel alert", || {
        !alerts_of(&oracle, "impossible_travel").is_empty()
    });
    let travel = &alerts_of(&oracle, "impossible_travel")[0];
    assert_eq!(travel["severity"], "high", "{travel}");
    assert_eq!(travel["account"], "alice", "{travel}");
    assert_eq!(travel["ip"], NEW_YORK, "{travel}");
    assert_eq!(travel["counts"]["previous"]["country"], "DE", "{travel}");
    assert_eq!(travel["counts"]["current"]["country"], "US", "{travel}");
    let speed = travel["counts"]["speed_kmh"].as_f64().unwrap();
    assert!(
        speed > 30_000.0,
        "Berlin to New York (~6,400 km) in 10 min: {travel}"
    );
}

/// Berlin, then New York twenty hours later: a flight, not an attack.
#[test]
fn berlin_then_new_york_twenty_hours_later_is_not() {
    let world = World::new(&["alice"]);
    let oracle = oracle_with_past_login(&world, "alice", BERLIN, Duration::from_secs(20 * 3600));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, NEW_YORK, "alice", PASSWORD), 235);
    wait_until(&oracle, "the New York login is learnt", || {
        baseline(&oracle, "alice")["logins"] == 2
    });
    assert!(
        alerts_of(&oracle, "impossible_travel").is_empty(),
        "{:?}",
        oracle.alerts()
    );
    assert!(
        alerts_of(&oracle, "distant_logins").is_empty(),
        "{:?}",
        oracle.alerts()
    );
}

/// Paris then Sydney within minutes, both on one mobile carrier listed in
/// `ignore_asns`: ignored; the same pair without the listing: impossible travel.
#[test]
fn travel_inside_a_listed_mobile_carrier_is_ignored() {
    for (listed, expected) in [(true, 0), (false, 1)] {
        let world = World::new(&["alice"]);
        let ignore = if listed {
            "[rules.impossible_travel]\nignore_asns = [64502]\n[rules.distant_logins]\nignore_asns = [64502]\n"
        } else {
            ""
        };
        let oracle = Oracle::start_with(&world, &format!("{}{ignore}", geoip_toml(&world)));
        let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
        assert_eq!(login(&exim, PARIS_MOBILE, "alice", PASSWORD), 235);
        assert_eq!(login(&exim, SYDNEY_MOBILE, "alice", PASSWORD), 235);
        wait_until(&oracle, "both logins learnt", || {
            baseline(&oracle, "alice")["logins"] == 2
        });
        if expected > 0 {
            wait_until(&oracle, "the travel alert", || {
                alerts_of(&oracle, "impossible_travel").len() == expected
            });
        } else {
            assert!(
                alerts_of(&oracle, "impossible_travel").is_empty(),
                "{:?}",
                oracle.alerts()
            );
        }
    }
}

/// A login from a country the account has not used, after learning: a medium alert;
/// another login from a known country: none; while learning: none.
#[test]
fn new_country_alerts_after_learning_only() {
    let world = World::new(&["alice", "bob"]);
    let oracle = Oracle::start_with(&world, &format!("{}{LEARN_AT_ONCE}", geoip_toml(&world)));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, BERLIN, "alice", PASSWORD), 235);
    assert_eq!(
        login(&exim, "192.0.2.99", "alice", PASSWORD),
        235,
        "Berlin again"
    );
    wait_until(&oracle, "two logins learnt", || {
        baseline(&oracle, "alice")["logins"] == 2
    });
    assert!(
        alerts_of(&oracle, "new_country").is_empty(),
        "a known country: {:?}",
        oracle.alerts()
    );
    assert_eq!(
        login(&exim, "2001:db8::7", "alice", PASSWORD),
        235,
        "London"
    );
    wait_until(&oracle, "a new_country alert", || {
        !alerts_of(&oracle, "new_country").is_empty()
    });
    let alert = &alerts_of(&oracle, "new_country")[0];
    assert_eq!(alert["severity"], "medium", "{alert}");
    assert_eq!(alert["counts"]["country"], "GB", "{alert}");
    assert_eq!(
        alert["counts"]["known_countries"],
        serde_json::json!(["DE"]),
        "{alert}"
    );
    let b = baseline(&oracle, "alice");
    assert_eq!(b["countries"].as_array().unwrap().len(), 2, "{b}");

    // With the default learning period (14 days, 10 logins) nothing is new yet.
    let world = World::new(&["bob"]);
    let oracle = Oracle::start_with(&world, &geoip_toml(&world));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, BERLIN, "bob", PASSWORD), 235);
    assert_eq!(login(&exim, "2001:db8::7", "bob", PASSWORD), 235);
    wait_until(&oracle, "bob's logins learnt", || {
        baseline(&oracle, "bob")["logins"] == 2
    });
    assert_eq!(baseline(&oracle, "bob")["learning"], true);
    assert!(
        alerts_of(&oracle, "new_country").is_empty(),
        "{:?}",
        oracle.alerts()
    );
}

/// One address failing on ten accounts: blocked (high alert); the next connection from
/// it is refused at connect, other addresses are not; nine accounts are not enough.
#[test]
fn spraying_across_ten_accounts_blocks_the_address() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let sprayer = "203.0.113.66";
    for i in 0..9 {
        assert_eq!(login(&exim, sprayer, &format!("user{i}"), "guess"), 535);
    }
    assert!(
        alerts_of(&oracle, "password_spraying").is_empty(),
        "nine accounts"
    );
    assert_eq!(
        login(&exim, sprayer, "user9", "guess"),
        535,
        "the tenth keeps its 535"
    );
    wait_until(&oracle, "a password_spraying alert", || {
        !alerts_of(&oracle, "password_spraying").is_empty()
    });
    let alert = &alerts_of(&oracle, "password_spraying")[0];
    assert_eq!(alert["severity"], "high", "{alert}");
    assert_eq!(alert["ip"], sprayer, "{alert}");
    assert_eq!(alert["response"], "block_ip", "{alert}");

    let refused = exim.bh(sprayer, &Dialogue::auth_only("alice", PASSWORD));
    let greeting = refused.greeting.as_ref().expect("a greeting or refusal");
    assert_eq!(greeting.code / 100, 5, "{}", refused.transcript());
    let other = exim.bh("203.0.113.67", &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(other.reply("AUTH").code, 235, "{}", other.transcript());
    let status = oracle.ctl_json(&["status"]);
    assert!(
        status.to_string().contains(sprayer),
        "ctl status lists the block: {status}"
    );
}

/// An account in the accounts file: denied (535) with the right password, a critical
/// alert; an account not listed is untouched.
#[test]
fn a_disabled_account_is_denied_with_a_critical_alert() {
    let world = World::new(&["alice", "olduser"]);
    let file = world.path("disabled-accounts");
    fs::write(&file, "# left the company\nolduser\n").unwrap();
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[rules.disabled_credentials]\nfile = \"{}\"\n",
            file.display()
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, BERLIN, "olduser", PASSWORD), 535);
    assert_eq!(login(&exim, BERLIN, "alice", PASSWORD), 235);
    wait_until(&oracle, "a disabled_credentials alert", || {
        !alerts_of(&oracle, "disabled_credentials").is_empty()
    });
    let alert = &alerts_of(&oracle, "disabled_credentials")[0];
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert_eq!(alert["account"], "olduser", "{alert}");
    assert_eq!(alerts_of(&oracle, "disabled_credentials").len(), 1);

    // The file is reread when it changes: alice disabled, olduser back.
    fs::write(&file, "alice\n").unwrap();
    wait_until(&oracle, "the changed file applies", || {
        login(&exim, BERLIN, "alice", PASSWORD) == 535
    });
    assert_eq!(login(&exim, BERLIN, "olduser", PASSWORD), 235);
}

/// An allow-listed address (an office NAT) sprays, and is still never blocked; a listed
/// bad address is refused at connect with an alert.
#[test]
fn allow_listed_addresses_are_never_blocked_and_bad_ones_are() {
    let world = World::new(&["alice"]);
    let allow = world.path("lists/office");
    let block = world.path("lists/drop");
    fs::create_dir_all(allow.parent().unwrap()).unwrap();
    fs::write(&allow, "# office NAT\n203.0.113.0/28\n").unwrap();
    fs::write(
        &block,
        "; Spamhaus DROP style\n198.51.100.0/24 ; SBL000001\n",
    )
    .unwrap();
    let oracle = Oracle::start_with(
        &world,
        &format!(
            "[lists]\nallow = [\"{}\"]\nblock = [\"{}\"]\n",
            allow.display(),
            block.display()
        ),
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let office = "203.0.113.3";
    for i in 0..25 {
        assert_eq!(login(&exim, office, &format!("user{i}"), "guess"), 535);
    }
    assert_eq!(
        login(&exim, office, "alice", PASSWORD),
        235,
        "never blocked"
    );
    assert!(
        alerts_of(&oracle, "password_spraying").is_empty(),
        "{:?}",
        oracle.alerts()
    );
    assert!(
        alerts_of(&oracle, "failed_logins_ip").is_empty(),
        "{:?}",
        oracle.alerts()
    );

    let listed = exim.bh(NEW_YORK, &Dialogue::auth_only("alice", PASSWORD));
    let greeting = listed.greeting.as_ref().expect("a greeting or refusal");
    assert_eq!(
        greeting.code / 100,
        4,
        "defer by default: {}",
        listed.transcript()
    );
    wait_until(&oracle, "a bad_ip alert", || {
        !alerts_of(&oracle, "bad_ip").is_empty()
    });
    let alert = &alerts_of(&oracle, "bad_ip")[0];
    assert!(
        alert["summary"].as_str().unwrap().contains("SBL000001"),
        "{alert}"
    );
}

/// The city database replaced while logins flow: no login fails, and new logins are
/// located with the new data; then replaced by a damaged file: refused, the last good
/// one stays in use.
#[test]
fn the_mmdb_replaced_while_requests_flow() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with(&world, &format!("{}{LEARN_AT_ONCE}", geoip_toml(&world)));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    let city = world.path("geo/city.mmdb");
    let done = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        let logins = s.spawn(|| {
            (0..20)
                .map(|i| {
                    let code = login(&exim, &format!("192.0.2.{}", 20 + i), "alice", PASSWORD);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    code
                })
                .collect::<Vec<_>>()
        });
        // Replace the file once logins are flowing (a few done, most still to come).
        wait_until(&oracle, "the first logins", || {
            done.load(std::sync::atomic::Ordering::Relaxed) >= 3
        });
        let bytes = geo_fixtures::city_db_bytes(geo_fixtures::ALTERNATIVE).unwrap();
        geo_fixtures::replace_atomically(&city, &bytes).unwrap();
        let codes = logins.join().unwrap();
        assert!(codes.iter().all(|&c| c == 235), "{codes:?}");
    });
    // Berlin's range is Tokyo in the new file.
    wait_until(&oracle, "a login located with the new database", || {
        login(&exim, "192.0.2.200", "alice", PASSWORD);
        baseline(&oracle, "alice")["countries"]
            .as_array()
            .is_some_and(|c| c.iter().any(|e| e["country"] == "JP"))
    });
    // A damaged file replaces it: refused, the one in use stays.
    geo_fixtures::replace_atomically(&city, b"this is not a MaxMind database").unwrap();
    wait_until(&oracle, "the damaged file is refused", || {
        oracle
            .log_text()
            .contains("geoip database refused; the one in use stays")
    });
    let before = baseline(&oracle, "alice");
    assert_eq!(login(&exim, "192.0.2.201", "alice", PASSWORD), 235);
    let jp_logins = |b: &Value| {
        b["countries"]
            .as_array()
            .and_then(|c| c.iter().find(|e| e["country"] == "JP"))
            .and_then(|e| e["logins"].as_u64())
            .unwrap_or(0)
    };
    wait_until(&oracle, "still located with the last good file", || {
        jp_logins(&baseline(&oracle, "alice")) == jp_logins(&before) + 1
    });
    assert!(
        !oracle.log_text().contains("panicked"),
        "{}",
        oracle.log_text()
    );
}

/// Baselines survive a restart: a login learnt before is still known after, and the
/// travel rule compares with it.
#[test]
fn baselines_survive_a_restart() {
    let world = World::new(&["alice"]);
    let mut oracle = Oracle::start_with(&world, &format!("{}{LEARN_AT_ONCE}", geoip_toml(&world)));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, BERLIN, "alice", PASSWORD), 235);
    let before = baseline(&oracle, "alice");
    assert_eq!(before["logins"], 1);
    oracle.restart();
    let after = baseline(&oracle, "alice");
    assert_eq!(after["countries"], before["countries"], "{after}");
    assert_eq!(after["since"], before["since"]);
    assert_eq!(login(&exim, NEW_YORK, "alice", PASSWORD), 235);
    wait_until(&oracle, "travel against the restored baseline", || {
        !alerts_of(&oracle, "impossible_travel").is_empty()
    });
}

/// A login from an AS the account has not used (after learning): a low alert; the same
/// AS again: none.
#[test]
fn new_asn_alerts_once_per_new_network() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with(&world, &format!("{}{LEARN_AT_ONCE}", geoip_toml(&world)));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    assert_eq!(login(&exim, PARIS_MOBILE, "alice", PASSWORD), 235);
    assert_eq!(
        login(&exim, "203.0.113.9", "alice", PASSWORD),
        235,
        "the same AS"
    );
    wait_until(&oracle, "two logins learnt", || {
        baseline(&oracle, "alice")["logins"] == 2
    });
    assert!(
        alerts_of(&oracle, "new_asn").is_empty(),
        "{:?}",
        oracle.alerts()
    );
    assert_eq!(login(&exim, BERLIN, "alice", PASSWORD), 235);
    wait_until(&oracle, "a new_asn alert", || {
        !alerts_of(&oracle, "new_asn").is_empty()
    });
    let alert = &alerts_of(&oracle, "new_asn")[0];
    assert_eq!(alert["severity"], "low", "{alert}");
    assert_eq!(alert["counts"]["asn"], 64500, "{alert}");
    assert_eq!(
        alert["counts"]["known_asns"],
        serde_json::json!([64502]),
        "{alert}"
    );
}

/// Berlin, then Paris (~880 km) 59 minutes later: possible at 900 km/h, but two distant
/// logins within the hour (medium); two hours later: nothing.
#[test]
fn distant_logins_within_the_hour() {
    for (ago_secs, expected) in [(59 * 60, 1), (2 * 3600, 0)] {
        let world = World::new(&["alice"]);
        let oracle = oracle_with_past_login(&world, "alice", BERLIN, Duration::from_secs(ago_secs));
        let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
        assert_eq!(login(&exim, PARIS_MOBILE, "alice", PASSWORD), 235);
        wait_until(&oracle, "the Paris login is learnt", || {
            baseline(&oracle, "alice")["logins"] == 2
        });
        assert!(
            alerts_of(&oracle, "impossible_travel").is_empty(),
            "{:?}",
            oracle.alerts()
        );
        if expected > 0 {
            wait_until(&oracle, "a distant_logins alert", || {
                !alerts_of(&oracle, "distant_logins").is_empty()
            });
            let alert = &alerts_of(&oracle, "distant_logins")[0];
            assert_eq!(alert["severity"], "medium", "{alert}");
            assert_eq!(alert["counts"]["current"]["country"], "FR", "{alert}");
        } else {
            assert!(
                alerts_of(&oracle, "distant_logins").is_empty(),
                "{:?}",
                oracle.alerts()
            );
        }
    }
}

/// An account that sent about 10 recipients an hour (learnt from its history) sends 105
/// in one session: the 101st trips the spike (above max(3 x 10, floor 100)) and the
/// following recipients are deferred; 100 recipients would not have.
#[test]
fn outbound_spike_against_the_learnt_sending_rate() {
    for (rcpts, spike) in [(100usize, false), (105, true)] {
        let world = World::new(&["alice"]);
        let log = world.path("history/mainlog");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut history = String::new();
        for h in 0..3u64 {
            let ago = Duration::from_secs((5 - h) * 3600);
            let line = past_arrival("alice", BERLIN, ago, h as usize + 1);
            let many: Vec<String> = (0..10).map(|i| format!("r{i}@example.net")).collect();
            history.push_str(&line.replace("bob@example.net", &many.join(" ")));
        }
        fs::write(&log, history).unwrap();
        let oracle = Oracle::start_with(
            &world,
            &format!(
                "{}[baselines]\nlearning_secs = 0\nlearning_send_hours = 3\n",
                source_toml(&log)
            ),
        );
        wait_until(&oracle, "the history is learnt", || {
            baseline(&oracle, "alice")["sending"]["hours"] == 2
        });
        let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
        let mut d = Dialogue::new()
            .ehlo("client.example")
            .auth_plain("alice", PASSWORD)
            .mail_from("alice@example.org");
        for i in 0..rcpts {
            d = d.rcpt_to(&format!("burst{i}@example.net"));
        }
        let session = exim.bh(BERLIN, &d.quit());
        session.assert_oracle_answered();
        let codes = session.codes("RCPT");
        if spike {
            assert!(codes[..101].iter().all(|&c| c == 250), "{codes:?}");
            assert!(codes[101..].iter().all(|&c| c == 451), "{codes:?}");
            wait_until(&oracle, "an outbound_spike alert", || {
                !alerts_of(&oracle, "outbound_spike").is_empty()
            });
            let alert = &alerts_of(&oracle, "outbound_spike")[0];
            assert_eq!(alert["counts"]["threshold"], 100, "{alert}");
            assert_eq!(alert["response"], "throttle_rcpt", "{alert}");
        } else {
            assert!(codes.iter().all(|&c| c == 250), "{codes:?}");
            assert!(
                alerts_of(&oracle, "outbound_spike").is_empty(),
                "{:?}",
                oracle.alerts()
            );
        }
    }
}
