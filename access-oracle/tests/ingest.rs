//! `access-oracle ingest`: past Exim and Dovecot logs (plain and gzip) backfilled into the
//! persisted state, with GeoIP from test databases; then what the state holds.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use access_oracle::persist::snapshot;
use access_oracle::state::State;

fn exim_arrival(day: u32, hour: u32, n: u32, ip: &str) -> String {
    format!(
        "2026-10-{day:02} {hour:02}:10:00 1tQx{n:02}-000001-AB <= alice@example.org H=(laptop) [{ip}]:40000 P=esmtpsa A=plain_server:alice S=1234 id=m{n}@example.org for bob@example.net carol@example.net\n"
    )
}

fn config(dir: &Path) -> std::path::PathBuf {
    let city = dir.join("city.mmdb");
    let asn = dir.join("asn.mmdb");
    geo_fixtures::write_city_db(&city).unwrap();
    geo_fixtures::write_asn_db(&asn).unwrap();
    let path = dir.join("oracle.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nstate_dir = \"{0}/state\"\nexim_socket = \"{0}/exim.sock\"\nadmin_socket = \"{0}/admin.sock\"\n\
             [geoip]\ncity_db = \"{1}\"\nasn_db = \"{2}\"\n",
            dir.display(),
            city.display(),
            asn.display()
        ),
    )
    .unwrap();
    path
}

fn ingest(config: &Path, files: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_access-oracle"))
        .arg("ingest")
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(files)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
fn past_logs_become_baselines_merged_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // Exim: a month of sending from Berlin, gzip-compressed, with one line that looks
    // relevant but is cut off.
    let mut exim = String::new();
    for day in 1..=28 {
        exim.push_str(&exim_arrival(day, 9, day, "192.0.2.10"));
    }
    exim.push_str("2026-10-29 09:00:00 plain_server authenticator failed for (x) [nonsense: 535 Incorrect authentication data\n");
    let exim_gz = dir.path().join("mainlog.1.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&exim_gz).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(exim.as_bytes()).unwrap();
    gz.finish().unwrap();
    // Dovecot: IMAP logins from London in the same month (the reader merges by time).
    let mut dovecot = String::new();
    for day in [3, 10, 17] {
        dovecot.push_str(&format!(
            "Oct {day:2} 20:00:00 mx1 dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=2001:db8::5, lip=198.51.100.1, mpid=31{day}, TLS, session=<s{day}>\n"
        ));
    }
    let dovecot_log = dir.path().join("dovecot.log");
    std::fs::write(&dovecot_log, dovecot).unwrap();
    // syslog lines have no year: the file's time says which.
    let oct_31 = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_793_404_800);
    std::fs::File::options()
        .write(true)
        .open(&dovecot_log)
        .unwrap()
        .set_modified(oct_31)
        .unwrap();

    let out = ingest(&config, &[&exim_gz, &dovecot_log]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["parsed"]["lines"], 32, "{report}");
    assert_eq!(report["parsed"]["auth_ok"], 31, "{report}");
    assert_eq!(report["parsed"]["events"]["arrival"], 28, "{report}");
    assert_eq!(report["baselines_after"], 1, "{report}");
    assert_eq!(report["from"], "2026-10-01T09:10:00Z", "{report}");
    let dead = std::fs::read_to_string(dir.path().join("state/dead-letters.log")).unwrap();
    assert!(dead.contains("[nonsense: 535"), "{dead}");

    let state = State::default();
    snapshot::read(&state, &dir.path().join("state"), 1_800_000_000)
        .unwrap()
        .expect("a snapshot");
    let b = state.baseline("alice").expect("alice's baseline");
    let countries: Vec<String> = b.countries.iter().map(|c| c.key.to_string()).collect();
    assert_eq!(countries, ["DE", "GB"]);
    assert_eq!(b.logins, 31, "every login: the Exim ones are a day apart");
    assert!(b.hours[9] >= 28 && b.hours[20] == 3, "{:?}", b.hours);
    assert_eq!(b.send.hours, 27, "27 completed sending hours");
    assert!((b.send.average - 2.0).abs() < 0.01);
    // Merged by time: the last located login is the last Exim one (Oct 28), not the
    // last Dovecot one (Oct 17) read after it.
    assert_eq!(b.last_place.as_ref().unwrap().ip.to_string(), "192.0.2.10");

    // The history is in the audit trail: every login and message, with its own time
    // and where it was read, marked as ingested.
    let alerts: u64 = report["alerts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(report["audit_records"], 31 + 28 + alerts, "{report}");
    let logins = audit(
        &config,
        &["search", "--user", "alice", "--kind", "auth", "--json"],
    );
    let logins: Vec<serde_json::Value> = String::from_utf8(logins.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logins.len(), 31);
    assert!(
        logins
            .iter()
            .all(|r| r["source"] == "ingest" && r["result"] == "ok")
    );
    assert!(
        logins.iter().all(|r| r["verdict"].is_null()),
        "no verdict on history"
    );
    let first_exim = logins
        .iter()
        .find(|r| r["protocol"] == "smtp")
        .expect("an SMTP login");
    assert_eq!(first_exim["time"], "2026-10-01T09:10:00Z");
    assert!(
        first_exim["file"]
            .as_str()
            .unwrap()
            .ends_with("mainlog.1.gz")
    );
    assert_eq!(first_exim["offset"], 0);
    let imap: Vec<&serde_json::Value> = logins.iter().filter(|r| r["protocol"] == "imap").collect();
    assert_eq!(imap.len(), 3);
    assert_eq!(imap[0]["ip"], "2001:db8::5");
    let verified = audit(&config, &["verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );

    // Ingesting again adds to what is there, on the same chain.
    let again = ingest(&config, &[&dovecot_log]);
    assert!(again.status.success());
    let state = State::default();
    snapshot::read(&state, &dir.path().join("state"), 1_800_000_000).unwrap();
    assert_eq!(state.baseline("alice").unwrap().logins, 34);
    let verified = audit(&config, &["verify", "--json"]);
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(
        verified["verified"]["records"].as_u64().unwrap(),
        1 + 31 + 28 + alerts + 3,
        "one segment record, the first ingest, the second: {verified}"
    );
}

fn audit(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_access-oracle"))
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn refuses_while_the_oracle_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let _live = UnixListener::bind(dir.path().join("admin.sock")).unwrap();
    let log = dir.path().join("mainlog");
    std::fs::write(&log, exim_arrival(1, 9, 1, "192.0.2.10")).unwrap();
    let out = ingest(&config, &[&log]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the oracle is running"), "{err}");
    assert!(!dir.path().join("state/state.snapshot").exists());
}

#[test]
fn an_encrypted_trail_hides_its_records_and_opens_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[audit]\nencrypt = true\n");
    std::fs::write(&config, text).unwrap();
    let mut dovecot = String::new();
    for day in [3, 10, 17] {
        dovecot.push_str(&format!(
            "Oct {day:2} 20:00:00 mx1 dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=2001:db8::5, lip=198.51.100.1, mpid=31{day}, TLS, session=<s{day}>\n"
        ));
    }
    let log = dir.path().join("dovecot.log");
    std::fs::write(&log, dovecot).unwrap();
    let out = ingest(&config, &[&log]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing about alice or where she was is readable in the files.
    let audit_dir = dir.path().join("state/audit");
    for entry in std::fs::read_dir(&audit_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("\"enc\":\""), "{text}");
            assert!(
                !text.contains("alice") && !text.contains("2001:db8::5"),
                "{text}"
            );
        }
    }
    // verify checks the chain; search opens the records with the key.
    let verified = audit(&config, &["verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let found = audit(&config, &["search", "--user", "alice", "--json"]);
    assert!(found.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records.iter().all(|r| r["ip"] == "2001:db8::5"));
    // Without the key: nothing read, and the reason on stderr.
    let locked = audit(
        &config,
        &[
            "search",
            "--user",
            "alice",
            "--json",
            "--key-file",
            "/nonexistent/audit.key",
        ],
    );
    assert!(locked.status.success());
    assert!(locked.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&locked.stderr);
    assert!(stderr.contains("encrypted record(s) not read"), "{stderr}");
}
