//! A year of audit records for 10,000 accounts, and how long `access-oracle report`
//! takes on it (issue 16 point 4), beside the floor: reading and verifying the same
//! trail (`audit verify`), which every report does first.
//!
//! Run: `cargo bench -p access-oracle --bench report` (a few minutes: writing the trail
//! is most of it; prints a markdown table). Results are in `docs/PERFORMANCE.md`.
//!
//! The trail, written with the audit writer (HMAC chain, one day file per day): per
//! account and day, a successful IMAP login and a submission with its recipients; one
//! account in twenty also fails a password from a foreign address; one alert a day.
//! 10,000 accounts x 365 days: about 7.5 million records. Then, timed: the period
//! report of the whole year (every record aggregated), its HTML and JSON renderings,
//! one account's access report for the year, and `audit verify` alone.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it writes 200 accounts for 10 days.

use std::path::Path;
use std::time::Instant;

use access_oracle::audit::{AuditConfig, Kind, Record, Source, Trail};
use access_oracle::commands::report::pseudo::Shown;
use access_oracle::commands::report::{self, Format, Options};
use access_oracle::enrich::GeoIp;
use access_oracle::protocol::Outcome;
use access_oracle::rules::{Response, Severity};
use jiff::Timestamp;

const START: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        dir: Some(dir.join("audit")),
        key_file: Some(dir.join("audit.key")),
        sync_interval_ms: 60_000,
        ..AuditConfig::default()
    }
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("a time")
}

/// Writes `days` days of records for `accounts` accounts; returns how many.
fn write_trail(dir: &Path, accounts: u32, days: i64) -> u64 {
    let config = config(dir);
    let mut written = 0u64;
    for day in 0..days {
        let base = START + day * 86_400;
        let mut trail = Trail::open(&config, dir, ts(base + 86_399)).expect("the trail");
        let mut records = Vec::with_capacity(accounts as usize * 2 + 64);
        for a in 0..accounts {
            let user = format!("user{a:05}@example.org");
            let at = base + i64::from(a % 86_000);
            let home = format!("10.{}.{}.{}", (a >> 8) & 255, a & 255, 1 + day % 200);
            let mut login = Record::new(Kind::Auth, Source::Live, ts(at))
                .user(&user)
                .ip(Some(home.parse().expect("an address")))
                .protocol(Some("imap"));
            login.result = Some(Outcome::Ok);
            login.verdict = Some("accept".into());
            records.push(login);
            let mut sent = Record::new(Kind::Sent, Source::Log, ts(at + 300)).user(&user);
            sent.rcpts = Some(u64::from(1 + a % 7));
            sent.msgid = Some(format!("1v{day:03}{a:05}-000001-Xy").into());
            records.push(sent);
            if a % 20 == 0 {
                let mut fail = Record::new(Kind::Auth, Source::Live, ts(at + 600))
                    .user(&user)
                    .ip(Some(
                        format!("203.0.113.{}", 1 + (day + i64::from(a)) % 250)
                            .parse()
                            .expect("an address"),
                    ))
                    .protocol(Some("smtp"));
                fail.result = Some(Outcome::Fail);
                fail.verdict = Some("accept".into());
                records.push(fail);
            }
        }
        let mut alert = Record::new(Kind::Alert, Source::Oracle, ts(base + 43_200))
            .user("user00000@example.org")
            .ip(Some("203.0.113.9".parse().expect("an address")));
        alert.rule = Some("failed_logins_account".into());
        alert.severity = Some(Severity::High);
        alert.response = Some(Response::HoldAccount);
        alert.until = Some(ts(base + 44_100));
        alert.reason = Some("account held".into());
        records.push(alert);
        written += records.len() as u64;
        trail
            .append(&mut records, ts(base + 86_399))
            .expect("appended");
        trail.sync().expect("synced");
    }
    written
}

fn options(user: Option<&str>, until: i64) -> Options {
    Options {
        config: None,
        state_dir: None,
        dir: None,
        key_file: None,
        since: Some(ts(START)),
        until: Some(ts(until)),
        period: None,
        user: user.map(str::to_string),
        format: Format::Json,
        output: None,
        pseudonymise: false,
        truncate_addresses: false,
    }
}

fn main() -> anyhow::Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (accounts, days) = if bench { (10_000, 365) } else { (200, 10) };
    let dir = tempfile::tempdir()?;
    {
        use std::io::Write;
        access_oracle::files::private_create()
            .open(dir.path().join("audit.key"))?
            .write_all(b"0123456789abcdef0123456789abcdef")?;
    }
    let t = Instant::now();
    let records = write_trail(dir.path(), accounts, days);
    let wrote = t.elapsed();
    let size: u64 = std::fs::read_dir(dir.path().join("audit"))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let until = START + days * 86_400;
    let now = ts(until + 3600);
    let geo = GeoIp::empty();
    let build = |user: Option<&str>| {
        report::build(
            &dir.path().join("audit"),
            &dir.path().join("audit.key"),
            dir.path(),
            (&geo, "not configured".into()),
            &options(user, until),
            &Shown::plain(false),
            now,
        )
    };
    let t = Instant::now();
    let year = build(None)?;
    let period = t.elapsed();
    anyhow::ensure!(year.trail.verification.ok, "the trail verifies");
    let t = Instant::now();
    let html = report::html::render(&year);
    let html_time = t.elapsed();
    let t = Instant::now();
    let json = report::json::render(&year)?;
    let json_time = t.elapsed();
    let t = Instant::now();
    let one = build(Some("user00042@example.org"))?;
    let account = t.elapsed();
    drop(one);
    let t = Instant::now();
    let key = access_oracle::audit::key::read(&dir.path().join("audit.key"))
        .map_err(anyhow::Error::msg)?;
    let verified = access_oracle::audit::verify::verify(&dir.path().join("audit"), &key);
    let verify = t.elapsed();
    println!(
        "trail: {accounts} accounts x {days} days = {records} records, {:.0} MiB, written in {:.1} s\n",
        size as f64 / 1048576.0,
        wrote.as_secs_f64()
    );
    println!("| step | seconds | records/s |");
    println!("|---|---:|---:|");
    let rate = |d: std::time::Duration| records as f64 / d.as_secs_f64();
    println!(
        "| `audit verify` alone (the floor) | {:.2} | {:.0} |",
        verify.as_secs_f64(),
        rate(verify)
    );
    println!(
        "| period report of the year (verify + aggregate) | {:.2} | {:.0} |",
        period.as_secs_f64(),
        rate(period)
    );
    println!(
        "| one account's report of the year | {:.2} | {:.0} |",
        account.as_secs_f64(),
        rate(account)
    );
    println!("| HTML rendering | {:.3} | |", html_time.as_secs_f64());
    println!("| JSON rendering | {:.3} | |", json_time.as_secs_f64());
    println!(
        "\nratio report / verify: {:.2}x; HTML {} KiB, JSON {} KiB; verify ok: {}",
        period.as_secs_f64() / verify.as_secs_f64(),
        html.len() / 1024,
        json.len() / 1024,
        verified.is_ok()
    );
    Ok(())
}
