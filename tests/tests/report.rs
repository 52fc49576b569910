//! `access-oracle report` on a trail made by real Dovecot (IMAP and POP3 logins through
//! the auth policy endpoint) and real Exim 4.96 (a brute force, its hold, a release, a
//! message sent): the numbers in the JSON report are the scenario's, countries and AS
//! come from the configured GeoIP files, the per-account report lists the account's
//! accesses, and the CSV, HTML and pseudonymised exports are written.
//!
//! Build first (see the harness): `cargo build -p access-oracle && cargo build --release
//! -p exim-dlfunc`.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::process::{self, Finished};
use exim_access_e2e::{
    Dialogue, Dovecot, DovecotSetup, Exim, Oracle, PASSWORD, POLICY_API_KEY, PolicyServer, Via,
    World, paths,
};
use serde_json::Value;

/// Berlin, DE, AS64500.
const HOME: &str = "192.0.2.10";
/// New York, US, AS64501.
const TRAVEL: &str = "198.51.100.5";
/// Paris, FR, AS64502.
const ATTACKER: &str = "203.0.113.9";
/// Sydney, AU, AS64502.
const GUESSER: &str = "203.0.113.200";
/// London, GB, AS64503: a network alice never used, so her hold applies there whatever
/// the hold's scope.
const ELSEWHERE: &str = "2001:db8::5";

const DEADLINE: Duration = Duration::from_secs(30);

fn geoip_toml(world: &World) -> String {
    let city = world.path("geo/city.mmdb");
    let asn = world.path("geo/asn.mmdb");
    fs::create_dir_all(city.parent().unwrap()).unwrap();
    geo_fixtures::write_city_db(&city).unwrap();
    geo_fixtures::write_asn_db(&asn).unwrap();
    format!(
        "[geoip]\ncity_db = \"{}\"\nasn_db = \"{}\"\n",
        city.display(),
        asn.display()
    )
}

/// `access-oracle report <args>` with the world's config and state, to its end.
fn report(world: &World, args: &[&str]) -> Finished {
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("report")
        .arg("--config")
        .arg(world.path("oracle.toml"))
        .arg("--state-dir")
        .arg(world.state_dir())
        .args(args);
    process::run(cmd, b"", Duration::from_secs(60))
}

fn report_json(world: &World, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = report(world, &all);
    out.assert_success();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout_text()))
}

/// Waits (bounded) until the oracle's timeline of `user` holds `n` logins.
fn wait_logins(oracle: &Oracle, user: &str, n: usize) {
    let until = Instant::now() + DEADLINE;
    loop {
        let a = oracle.ctl_json(&["account", user]);
        let seen = a["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["what"] == "login")
            .count();
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < until,
            "{user}: {n} logins not seen within {DEADLINE:?}:\n{a:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn row<'a>(rows: &'a Value, key: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {rows:#}"))
}

#[test]
fn the_report_counts_what_dovecot_and_exim_did() {
    let world = World::new(&["alice", "bob"]);
    let mut oracle = Oracle::start_with_policy(
        &world,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &geoip_toml(&world),
    );
    let mut dovecot = Dovecot::start_with(
        &world,
        &["alice", "bob"],
        &DovecotSetup {
            policy: Some(PolicyServer {
                url: oracle.policy_url(),
                api_key: POLICY_API_KEY.into(),
            }),
            exim_auth: false,
        },
    );
    // alice reads her mail over IMAP at home and POP3 while travelling.
    let mut imap = dovecot.imap();
    imap.id_originating(HOME, 40000);
    assert!(imap.login("alice", PASSWORD).is_ok());
    imap.logout();
    let mut pop3 = dovecot.pop3();
    pop3.xclient(TRAVEL, 40001);
    let reply = pop3.login("alice", PASSWORD);
    assert!(reply.starts_with("+OK"), "{reply}");
    pop3.quit();
    // Someone guesses bob's password twice over IMAP.
    for _ in 0..2 {
        let mut imap = dovecot.imap();
        imap.id_originating(GUESSER, 40002);
        assert!(!imap.login("bob", "wrong").is_ok());
    }
    wait_logins(&oracle, "alice", 2);
    wait_logins(&oracle, "bob", 2);

    // A brute force on alice over SMTP holds her; an administrator releases her; she
    // sends a message to two recipients.
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    for i in 0..5 {
        let s = exim.bh(
            ATTACKER,
            &Dialogue::auth_only("alice", format!("guess-{i}")),
        );
        assert_eq!(s.reply("AUTH").code, 535, "{}", s.transcript());
    }
    let held = exim.bh(ELSEWHERE, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(held.reply("AUTH").code / 100, 4, "{}", held.transcript());
    oracle.ctl(&["release", "alice"]).assert_success();
    let sent = exim.bh(
        HOME,
        &Dialogue::new()
            .ehlo("laptop.example")
            .auth_plain("alice", PASSWORD)
            .mail_from("alice@example.org")
            .rcpt_to("bob@example.net")
            .rcpt_to("carol@example.net")
            .data("hello")
            .quit(),
    );
    assert_eq!(sent.reply("DATA").code / 100, 3, "{}", sent.transcript());
    dovecot.stop();
    // Stopping writes what is queued.
    oracle.stop();

    let r = report_json(&world, &[]);
    assert_eq!(r["schema"], "access-oracle-report/1");
    let trail = &r["trail"];
    assert_eq!(trail["verification"]["ok"], true, "{trail:#}");
    assert_eq!(trail["head"]["seq"], trail["verification"]["last_seq"]);
    assert_eq!(trail["head"]["chain"].as_str().unwrap().len(), 64);
    let logins = &r["logins"];
    // alice: IMAP and POP3 ok, 5 SMTP failures, the held login refused, the sending
    // login ok; bob: 2 IMAP failures.
    assert_eq!(logins["total"]["ok"], 3, "{logins:#}");
    assert_eq!(logins["total"]["failed"], 7, "{logins:#}");
    assert_eq!(logins["total"]["refused"], 1, "{logins:#}");
    let imap_row = row(&logins["by_protocol"], "imap");
    assert_eq!(
        (imap_row["ok"].as_u64(), imap_row["failed"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(row(&logins["by_protocol"], "pop3")["ok"], 1);
    assert_eq!(row(&logins["by_protocol"], "smtp")["failed"], 5);
    assert_eq!(row(&logins["by_country"], "FR")["failed"], 5);
    assert_eq!(row(&logins["by_country"], "AU")["failed"], 2);
    assert_eq!(row(&logins["by_country"], "US")["ok"], 1);
    let de = row(&logins["by_country"], "DE");
    assert_eq!(
        (de["ok"].as_u64(), de["refused"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(row(&logins["by_country"], "GB")["refused"], 1);
    let as64502 = logins["by_as"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asn"] == 64502)
        .unwrap();
    assert_eq!(as64502["failed"], 7);
    assert_eq!(r["top_failing_addresses"]["rows"][0]["name"], ATTACKER);
    assert_eq!(r["top_failing_addresses"]["rows"][0]["failures"], 5);
    assert_eq!(r["top_failing_accounts"]["rows"][0]["name"], "alice");
    assert_eq!(r["top_failing_accounts"]["rows"][1]["name"], "bob");
    assert_eq!(
        row(&r["alerts"]["by_rule"], "failed_logins_account")["count"],
        1
    );
    let holds = r["holds_and_blocks"]["rows"].as_array().unwrap();
    let hold = holds.iter().find(|h| h["kind"] == "alert").unwrap();
    assert_eq!(hold["what"], "hold_account");
    assert_eq!(hold["account"], "alice");
    assert_eq!(hold["by"], "failed_logins_account");
    assert!(hold["for_secs"].as_i64().unwrap() > 0);
    let release = holds.iter().find(|h| h["kind"] == "release").unwrap();
    assert!(
        release["by"].as_str().unwrap().starts_with("uid "),
        "{release}"
    );
    assert_eq!(r["admin_actions"]["rows"].as_array().unwrap().len(), 1);
    assert_eq!(r["sending"]["messages"], 1);
    assert_eq!(r["sending"]["recipients"], 2);

    // alice's own report: each access with where it came from.
    let a = report_json(&world, &["--user", "alice"]);
    let rows = a["access"]["logins"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "{rows:#?}");
    let imap_login = rows.iter().find(|x| x["protocol"] == "imap").unwrap();
    assert_eq!(imap_login["address"], HOME);
    assert_eq!(imap_login["country"], "DE");
    assert_eq!(imap_login["asn"], 64500);
    assert_eq!(imap_login["outcome"], "ok");
    let pop3_login = rows.iter().find(|x| x["protocol"] == "pop3").unwrap();
    assert_eq!(pop3_login["country"], "US");
    assert_eq!(rows.iter().filter(|x| x["outcome"] == "failed").count(), 5);
    assert_eq!(a["access"]["sent"]["rows"][0]["recipients"], 2);
    assert_eq!(a["logins"]["total"]["failed"], 5);

    // The other formats, and an export without names.
    let html = world.path("report.html");
    report(&world, &["-o", html.to_str().unwrap()]).assert_success();
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"chart-days\"") && !page.contains("https://"));
    let csv = world.path("csv");
    report(&world, &["--format", "csv", "-o", csv.to_str().unwrap()]).assert_success();
    let days = fs::read_to_string(csv.join("logins_by_day.csv")).unwrap();
    assert!(
        days.starts_with("day,ok,failed,refused,total\r\n"),
        "{days}"
    );
    let p = report(&world, &["--format", "json", "--pseudonymise"]);
    p.assert_success();
    let text = p.stdout_text();
    for name in ["alice", "bob", HOME, TRAVEL, ATTACKER, GUESSER, ELSEWHERE] {
        assert!(!text.contains(name), "{name} in the pseudonymised report");
    }
}
