//! An alert's context through real Exim 4.96 and Dovecot 2.3 (issue 13 point 3): the
//! account's recent logins with how each was made, the hold and the exact command that
//! ends it, which works when run; the same details in the audit trail.
//!
//! Exim runs the shipped configuration with its plaintext authenticators calling the
//! library (which sends the mechanism, the authenticator's name, the HELO name, the
//! ports and the TLS cipher); one login goes through a real Exim daemon over STARTTLS
//! (swaks `--tls`, Exim's own generated certificate), one through `exim -bh` from a
//! Berlin address. Dovecot asks the oracle through its auth policy (the shipped
//! snippet, which sends `mech` and `rport`); its IMAP client poses as a New York
//! address. The GeoIP files are the test ones (`geo-fixtures`).
//!
//! Build first (see the harness): `cargo build -p access-oracle && cargo build --release
//! -p exim-dlfunc`.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::oracle::audit;
use exim_access_e2e::process;
use exim_access_e2e::{
    Dialogue, Dovecot, DovecotSetup, Exim, Oracle, PASSWORD, POLICY_API_KEY, PolicyServer, Via,
    World,
};
use serde_json::Value;

/// Berlin, DE, AS64500.
const BERLIN: &str = "192.0.2.10";
/// New York, US, AS64501.
const NEW_YORK: &str = "198.51.100.7";

const DEADLINE: Duration = Duration::from_secs(30);

/// Writes the test GeoIP files into the world and returns the `[geoip]` table.
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

/// An IMAP login posing as `ip`; the tagged reply (`status text`).
fn imap_login(dovecot: &Dovecot, ip: &str, user: &str, password: &str) -> String {
    let mut imap = dovecot.imap();
    imap.id_originating(ip, 40000);
    let reply = imap.login(user, password);
    let line = format!("{} {}", reply.status, reply.text);
    if reply.is_ok() {
        imap.logout();
    }
    line
}

/// The audit records of `user`, oldest first.
fn audit_records(world: &World, user: &str) -> Vec<Value> {
    let out = audit(world, &["search", "--json", "--user", user]);
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `command` run by `sh -c`, with the oracle's binary first on `PATH`, as an admin
/// pastes it.
fn run_pasted(command: &str) -> process::Finished {
    let bin = exim_access_e2e::paths::oracle_bin();
    let dir = bin.parent().expect("the binary is in a directory");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).env(
        "PATH",
        format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", dir.display()),
    );
    process::run(cmd, b"", Duration::from_secs(30))
}

#[test]
fn an_alert_shows_the_recent_logins_and_its_undo_command_ends_the_hold() {
    let world = World::new(&["alice"]);
    let oracle = Oracle::start_with_policy(
        &world,
        "tarpit_after = 0\ntarpit_after_ip = 0",
        &geoip_toml(&world),
    );
    let dovecot = Dovecot::start_with(
        &world,
        &["alice"],
        &DovecotSetup {
            policy: Some(PolicyServer {
                url: oracle.policy_url(),
                api_key: POLICY_API_KEY.into(),
            }),
            exim_auth: false,
        },
    );
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    // SMTP AUTH over STARTTLS through a real Exim daemon, on loopback.
    let daemon = exim.daemon();
    let tls = daemon
        .swaks()
        .args(&["--tls"])
        .auth_plain("alice", PASSWORD)
        .quit_after("AUTH")
        .run();
    // (swaks marks what it says and hears inside TLS with `~>` and `<~`.)
    assert!(
        tls.transcript().contains("<~  235 "),
        "{}",
        tls.transcript()
    );
    // SMTP AUTH from Berlin, from the client's port 40123.
    let berlin = exim.bh(
        &format!("{BERLIN}.40123"),
        &Dialogue::new()
            .ehlo("laptop.example")
            .auth_plain("alice", PASSWORD)
            .quit(),
    );
    berlin.assert_oracle_answered();
    assert_eq!(berlin.reply("AUTH").code, 235, "{}", berlin.transcript());
    // Five wrong IMAP passwords from New York: the account is held.
    for i in 1..=5 {
        let reply = imap_login(&dovecot, NEW_YORK, "alice", &format!("wrong-{i}"));
        assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Authentication failed.");
    }
    let until = Instant::now() + DEADLINE;
    let alert = loop {
        if let Some(a) = oracle
            .alerts()
            .into_iter()
            .find(|a| a["rule"] == "failed_logins_account")
        {
            break a;
        }
        assert!(
            Instant::now() < until,
            "no hold alert within {DEADLINE:?}:\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    };
    let c = &alert["context"];
    let logins = c["recent_logins"].as_array().expect("recent logins");
    assert_eq!(logins.len(), 7, "{c:#}");
    // Newest first: the five IMAP failures from New York, as Dovecot's policy request
    // described them.
    for l in &logins[..5] {
        assert_eq!(l["protocol"], "imap", "{l:#}");
        assert_eq!(l["outcome"], "fail", "{l:#}");
        assert_eq!(l["ip"], NEW_YORK, "{l:#}");
        assert_eq!(l["country"], "US", "{l:#}");
        assert_eq!(l["asn"], 64501, "{l:#}");
        assert_eq!(l["mechanism"], "PLAIN", "{l:#}");
        assert_eq!(l["port"], 40000, "{l:#}");
        assert_eq!(l["tls"], false, "{l:#}");
    }
    // Then Berlin through `exim -bh`, as the library described it.
    let b = &logins[5];
    assert_eq!(
        (&b["protocol"], &b["outcome"], &b["ip"]),
        (&"smtp".into(), &"ok".into(), &BERLIN.into()),
        "{b:#}"
    );
    assert_eq!((&b["country"], &b["asn"]), (&"DE".into(), &64500.into()));
    assert_eq!(b["mechanism"], "PLAIN", "{b:#}");
    assert_eq!(b["authenticator"], "access_plain", "{b:#}");
    assert_eq!(b["client"], "laptop.example", "{b:#}");
    assert_eq!(b["port"], 40123, "{b:#}");
    // Then the daemon's session: on loopback, over TLS, to the daemon's port.
    let d = &logins[6];
    assert_eq!(
        (&d["protocol"], &d["ip"]),
        (&"smtp".into(), &"127.0.0.1".into())
    );
    assert_eq!(d["authenticator"], "access_plain", "{d:#}");
    assert_eq!(d["tls"], true, "{d:#}");
    assert!(
        d["tls_cipher"].as_str().is_some_and(|c| c.contains("TLS")),
        "{d:#}"
    );
    assert_eq!(d["local_port"], daemon.port(), "{d:#}");
    assert_eq!(d["client"], "client.example", "{d:#}");
    assert_eq!(c["addresses_24h"], 3, "{c:#}");
    assert_eq!(c["countries_24h"], serde_json::json!(["DE", "US"]), "{c:#}");

    // What was done, and the exact command that undoes it.
    let socket = oracle.admin_socket().display().to_string();
    let undo = format!("access-oracle ctl --socket {socket} release alice");
    assert_eq!(c["undo"], undo.as_str(), "{c:#}");
    assert!(
        c["action"]
            .as_str()
            .is_some_and(|a| a.starts_with("account alice held until ")),
        "{c:#}"
    );
    let held = &c["in_force"][0];
    assert_eq!(
        (&held["what"], &held["on"], &held["undo"]),
        (&"hold".into(), &"alice".into(), &undo.as_str().into())
    );
    // `ctl alerts` shows the same context.
    let listed = oracle.ctl_json(&["alerts"]);
    assert_eq!(listed[0]["context"]["undo"], undo.as_str(), "{listed:#}");
    let table = oracle.ctl(&["alerts"]);
    table.assert_success();
    assert!(
        table.stdout_text().contains("undo: access-oracle ctl"),
        "{}",
        table.stdout_text()
    );

    // Still held, then the pasted command ends the hold: the next login is accepted.
    assert!(
        imap_login(&dovecot, NEW_YORK, "alice", PASSWORD).starts_with("NO [ALERT]"),
        "held before the undo"
    );
    let ran = run_pasted(&undo);
    ran.assert_success();
    assert!(ran.stdout_text().contains("alice"), "{}", ran.stdout_text());
    let released = imap_login(&dovecot, NEW_YORK, "alice", PASSWORD);
    assert!(
        released.starts_with("OK ") && released.ends_with("Logged in"),
        "released by the alert's own command: {released}"
    );
    let again = exim.bh(BERLIN, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(again.reply("AUTH").code, 235, "{}", again.transcript());

    // The audit trail keeps how each attempt was made, and the alert's undo.
    let records = audit_records(&world, "alice");
    let auths: Vec<&Value> = records.iter().filter(|r| r["kind"] == "auth").collect();
    let smtp = auths
        .iter()
        .find(|r| r["ip"] == BERLIN)
        .expect("the Berlin login's record");
    assert_eq!(smtp["mech"], "PLAIN", "{smtp:#}");
    assert_eq!(smtp["authenticator"], "access_plain", "{smtp:#}");
    assert_eq!(smtp["client"], "laptop.example", "{smtp:#}");
    assert_eq!(smtp["port"], 40123, "{smtp:#}");
    let over_tls = auths
        .iter()
        .find(|r| r["ip"] == "127.0.0.1")
        .expect("the daemon's login's record");
    assert_eq!(over_tls["tls"], true, "{over_tls:#}");
    assert!(over_tls["tls_cipher"].is_string(), "{over_tls:#}");
    let imap = auths
        .iter()
        .find(|r| r["ip"] == NEW_YORK && r["result"] == "fail")
        .expect("an IMAP failure's record");
    assert_eq!(
        (
            &imap["protocol"],
            &imap["mech"],
            &imap["port"],
            &imap["tls"]
        ),
        (
            &"imap".into(),
            &"PLAIN".into(),
            &40000.into(),
            &false.into()
        ),
        "{imap:#}"
    );
    let alert_record = records
        .iter()
        .find(|r| r["kind"] == "alert")
        .expect("the alert's record");
    assert_eq!(alert_record["undo"], undo.as_str(), "{alert_record:#}");
    audit(&world, &["verify"]).assert_success();
}
