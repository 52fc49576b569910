//! Reports from a trail written by the test with the audit writer, at fixed times: the
//! golden JSON, pseudonymised output in every format, CSV read back by Python's `csv`
//! module, and the HTML page opened in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jiff::Timestamp;

use super::pseudo::Shown;
use super::*;
use crate::audit::record::{Kind, Record, Source};
use crate::audit::{AuditConfig, Trail};
use crate::enrich::{GeoIp, GeoIpConfig};
use crate::protocol::Outcome;
use crate::rules::{Response, Severity};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-29T12:00:00Z";

/// Every account and address the trail names (the pseudonymised output must hold none).
const ACCOUNTS: &[&str] = &[
    "alice@example.org",
    "bob@example.org",
    "mallory@example.org",
    "carol@example.org",
    "<script>alert(1)</script>@example.org",
    "early@example.org",
];
const ADDRESSES: &[&str] = &[
    "192.0.2.10",
    "198.51.100.5",
    "203.0.113.200",
    "2001:db8::66",
    "203.0.113.7",
    "192.0.2.99",
    "198.51.100.0",
    "192.0.2.250",
];

fn config(dir: &Path, encrypt: bool) -> AuditConfig {
    AuditConfig {
        dir: Some(dir.join("audit")),
        key_file: Some(dir.join("audit.key")),
        sync_interval_ms: 60_000,
        encrypt,
        ..AuditConfig::default()
    }
}

fn auth(user: &str, ip: &str, protocol: &str, result: Option<Outcome>, time: &str) -> Record {
    let mut r = Record::new(Kind::Auth, Source::Live, t(time))
        .user(user)
        .ip(Some(ip.parse().unwrap()))
        .protocol(Some(protocol));
    r.result = result;
    r.verdict = Some(if result.is_some() { "accept" } else { "deny" }.into());
    if result.is_none() {
        r.reason = Some("address blocked".into());
    }
    r
}

/// Three days of records, written day by day as the daemon would (plus one before the
/// period).
fn write_trail(dir: &Path, encrypt: bool) {
    let config = config(dir, encrypt);
    // A fixed key, so the chain head in the golden file is the same every run.
    crate::files::private_create()
        .open(dir.join("audit.key"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"0123456789abcdef0123456789abcdef"))
        .unwrap();
    let day = |d: &str, records: Vec<Record>| {
        let now = t(&format!("{d}T23:00:00Z"));
        let mut trail = Trail::open(&config, dir, now).unwrap();
        let mut records = records;
        trail.append(&mut records, now).unwrap();
        trail.sync().unwrap();
    };
    day(
        "2026-11-25",
        vec![auth(
            "early@example.org",
            "192.0.2.250",
            "imap",
            Some(Outcome::Fail),
            "2026-11-25T10:00:00Z",
        )],
    );
    let mut alice_imap = auth(
        "alice@example.org",
        "192.0.2.10",
        "imap",
        Some(Outcome::Ok),
        "2026-11-26T08:00:00Z",
    );
    alice_imap.client = Some("[192.0.2.10]".into());
    alice_imap.tls = Some(true);
    alice_imap.mech = Some("PLAIN".into());
    let mut sent = Record::new(Kind::Sent, Source::Live, t("2026-11-26T08:05:00Z"))
        .user("alice@example.org")
        .ip(Some("198.51.100.5".parse().unwrap()));
    sent.msgid = Some("1vAbCd-000001-Xy".into());
    sent.rcpts = Some(3);
    let mut expunge = Record::new(Kind::Mailbox, Source::Log, t("2026-11-26T08:10:00Z"))
        .user("alice@example.org");
    expunge.action = Some("expunge".into());
    expunge.mailbox = Some("INBOX".into());
    expunge.uid = Some(42);
    let mut logout = Record::new(Kind::Logout, Source::Log, t("2026-11-26T08:20:00Z"))
        .user("alice@example.org")
        .ip(Some("192.0.2.10".parse().unwrap()))
        .protocol(Some("imap"));
    logout.bytes_in = Some(120);
    logout.bytes_out = Some(5400);
    logout.fetched = Some(2);
    logout.deleted = Some(1);
    day(
        "2026-11-26",
        vec![
            alice_imap,
            auth(
                "alice@example.org",
                "198.51.100.5",
                "smtp",
                Some(Outcome::Ok),
                "2026-11-26T08:04:00Z",
            ),
            sent,
            expunge,
            logout,
        ],
    );
    let mut recs: Vec<Record> = (0..5)
        .map(|i| {
            auth(
                "bob@example.org",
                "203.0.113.200",
                "imap",
                Some(Outcome::Fail),
                &format!("2026-11-27T03:00:0{i}Z"),
            )
        })
        .collect();
    let mut alert = Record::new(Kind::Alert, Source::Oracle, t("2026-11-27T03:00:05Z"))
        .user("bob@example.org")
        .ip(Some("203.0.113.200".parse().unwrap()))
        .protocol(Some("imap"));
    alert.rule = Some("failed_logins_account".into());
    alert.severity = Some(Severity::High);
    alert.response = Some(Response::HoldAccount);
    alert.until = Some(t("2026-11-27T03:15:05Z"));
    alert.reason = Some("5 failed logins for bob@example.org from 203.0.113.200".into());
    recs.push(alert);
    let mut release = Record::new(Kind::Release, Source::Admin, t("2026-11-27T03:10:00Z"))
        .user("bob@example.org");
    release.admin = Some("root".into());
    release.reason = Some("hold by failed_logins_account ended early; counters reset".into());
    release.until = Some(t("2026-11-27T03:15:05Z"));
    recs.push(release);
    recs.push(auth(
        "mallory@example.org",
        "2001:db8::66",
        "pop3",
        Some(Outcome::Fail),
        "2026-11-27T04:00:00Z",
    ));
    recs.push(auth(
        "mallory@example.org",
        "203.0.113.7",
        "smtp",
        None,
        "2026-11-27T04:01:00Z",
    ));
    recs.push(auth(
        "<script>alert(1)</script>@example.org",
        "192.0.2.99",
        "smtp",
        Some(Outcome::Fail),
        "2026-11-27T05:00:00Z",
    ));
    let mut info = Record::new(Kind::Alert, Source::Oracle, t("2026-11-27T05:00:01Z"))
        .ip(Some("192.0.2.99".parse().unwrap()));
    info.rule = Some("new_country".into());
    info.severity = Some(Severity::Low);
    info.response = Some(Response::Alert);
    info.reason = Some("login from a new country <b>".into());
    recs.push(info);
    // A rule in observe mode: what it would have done, nothing put in force.
    let mut observed = Record::new(Kind::Alert, Source::Oracle, t("2026-11-27T06:00:00Z"))
        .user("mallory@example.org")
        .ip(Some("203.0.113.7".parse().unwrap()));
    observed.rule = Some("failed_logins_account".into());
    observed.severity = Some(Severity::High);
    observed.response = Some(Response::HoldAccount);
    observed.until = Some(t("2026-11-27T06:15:00Z"));
    observed.reason = Some("[observed] 5 failed logins for mallory@example.org".into());
    recs.push(observed);
    day("2026-11-27", recs);
    let mut hold = Record::new(Kind::Admin, Source::Admin, t("2026-11-28T09:00:00Z"))
        .user("carol@example.org");
    hold.action = Some("hold".into());
    hold.admin = Some("uid 1000 (carol-admin)".into());
    hold.reason = Some("investigating".into());
    hold.until = Some(t("2026-11-28T10:00:00Z"));
    let mut block = Record::new(Kind::Admin, Source::Admin, t("2026-11-28T09:30:00Z"));
    block.action = Some("block".into());
    block.admin = Some("uid 0 (root)".into());
    block.reason = Some("198.51.100.0/24: spam run".into());
    block.until = Some(t("2026-11-29T09:30:00Z"));
    let mut unblock = Record::new(Kind::Unblock, Source::Admin, t("2026-11-28T11:00:00Z"))
        .ip(Some("198.51.100.5".parse().unwrap()));
    unblock.admin = Some("uid 0 (root)".into());
    unblock.reason = Some("lifted 198.51.100.0/24".into());
    let mut master = Record::new(Kind::Admin, Source::Log, t("2026-11-28T12:00:00Z"))
        .user("alice@example.org")
        .ip(Some("192.0.2.10".parse().unwrap()));
    master.action = Some("master_login".into());
    master.admin = Some("postmaster".into());
    day("2026-11-28", vec![hold, block, unblock, master]);
}

fn geo(dir: &Path) -> GeoIp {
    geo_fixtures::write_city_db(&dir.join("city.mmdb")).unwrap();
    geo_fixtures::write_asn_db(&dir.join("asn.mmdb")).unwrap();
    GeoIp::open(&GeoIpConfig {
        city_db: Some(dir.join("city.mmdb")),
        asn_db: Some(dir.join("asn.mmdb")),
        ..GeoIpConfig::default()
    })
    .unwrap()
}

fn options(user: Option<&str>) -> Options {
    Options {
        config: None,
        state_dir: None,
        dir: None,
        key_file: None,
        since: Some(t("2026-11-26T00:00:00Z")),
        until: Some(t("2026-11-29T00:00:00Z")),
        period: None,
        user: user.map(str::to_string),
        format: Format::Json,
        output: None,
        pseudonymise: false,
        truncate_addresses: false,
    }
}

fn report(dir: &Path, o: &Options, shown: &Shown) -> Report {
    let geo = geo(dir);
    build(
        &dir.join("audit"),
        &dir.join("audit.key"),
        dir,
        (&geo, "test databases".into()),
        o,
        shown,
        t(NOW),
    )
    .unwrap()
}

fn golden(name: &str, r: &Report, dir: &Path) {
    let json = String::from_utf8(json::render(r).unwrap()).unwrap();
    let json = json.replace(&dir.display().to_string(), "<tmp>");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(json, want, "{name} differs (UPDATE_GOLDEN=1 rewrites it)");
}

#[test]
fn the_period_and_account_reports_match_their_golden_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_trail(dir, false);
    let r = report(dir, &options(None), &Shown::plain(false));
    // The numbers the golden file holds, checked here too.
    let g = &r.gathered;
    assert!(r.trail.verification.ok, "{:?}", r.trail.verification);
    assert_eq!(
        r.trail.head.as_ref().map(|h| h.seq),
        r.trail.verification.last_seq
    );
    assert_eq!(
        (
            g.logins.total.ok,
            g.logins.total.failed,
            g.logins.total.refused
        ),
        (2, 7, 1)
    );
    assert_eq!(g.top_failing_addresses.rows[0].name, "203.0.113.200");
    assert_eq!(g.top_failing_addresses.rows[0].failures, 5);
    assert_eq!(g.top_failing_accounts.rows[0].name, "bob@example.org");
    assert_eq!((g.alerts.total, g.alerts.observed), (3, 1));
    assert_eq!(g.holds_and_blocks.rows.len(), 5, "{:?}", g.holds_and_blocks);
    assert_eq!(g.admin_actions.rows.len(), 5);
    assert_eq!((g.sending.messages, g.sending.recipients), (1, 3));
    let au = g.logins.by_country.iter().find(|c| c.key == "AU").unwrap();
    assert_eq!(au.logins.failed, 5);
    assert!(g.access.is_none());
    golden("report_golden.json", &r, dir);

    let r = report(
        dir,
        &options(Some("alice@example.org")),
        &Shown::plain(false),
    );
    let a = r.gathered.access.as_ref().unwrap();
    assert_eq!(a.logins.rows.len(), 2);
    assert_eq!(a.logins.rows[0].country.as_deref(), Some("DE"));
    assert_eq!(a.sent.rows[0].recipients, Some(3));
    assert_eq!(a.mailbox.rows.len(), 2, "{:?}", a.mailbox);
    assert_eq!(a.sessions.rows.len(), 1);
    golden("report_user_golden.json", &r, dir);
}

#[test]
fn the_last_complete_period_is_reported() {
    let now = t("2026-12-02T10:00:00Z"); // a Wednesday
    let b = |p: Period| p.bounds(now).unwrap();
    assert_eq!(
        b(Period::Day),
        (t("2026-12-01T00:00:00Z"), t("2026-12-02T00:00:00Z"))
    );
    assert_eq!(
        b(Period::Week),
        (t("2026-11-23T00:00:00Z"), t("2026-11-30T00:00:00Z"))
    );
    assert_eq!(
        b(Period::Month),
        (t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z"))
    );
    let mut o = options(None);
    o.period = Some(Period::Day);
    assert!(span(&o, now).unwrap_err().to_string().contains("exclude"));
}

/// Every format's bytes: the JSON, each CSV file, the HTML page.
fn all_formats(r: &Report, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("json".to_string(), json::render(r).unwrap()),
        ("html".to_string(), html::render(r).into_bytes()),
    ];
    let csv_dir = dir.join("csv");
    let _ = std::fs::remove_dir_all(&csv_dir);
    write(r, Format::Csv, Some(&csv_dir)).unwrap();
    for e in std::fs::read_dir(&csv_dir).unwrap() {
        let p = e.unwrap().path();
        out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
    }
    out
}

#[test]
fn pseudonymised_reports_hold_no_account_or_address_in_any_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Encrypted at rest: the report reads it with the key.
    write_trail(dir, true);
    for truncate in [false, true] {
        for user in [None, Some("alice@example.org")] {
            let shown = Shown::pseudonymised(truncate).unwrap();
            let r = report(dir, &options(user), &shown);
            assert!(r.trail.verification.ok);
            assert_eq!(r.trail.encrypted_unread, 0);
            if user.is_none() {
                assert_eq!(r.gathered.logins.total.total(), 10);
                assert_eq!(r.gathered.top_failing_addresses.rows[0].failures, 5);
            } else {
                assert_eq!(r.gathered.access.as_ref().unwrap().logins.rows.len(), 2);
            }
            for (name, bytes) in all_formats(&r, dir) {
                let text = String::from_utf8_lossy(&bytes).to_lowercase();
                for s in ACCOUNTS.iter().chain(ADDRESSES) {
                    assert!(!text.contains(&s.to_lowercase()), "{s} in {name}");
                    let local = s.split('@').next().unwrap_or(s).to_lowercase();
                    assert!(!text.contains(&local), "{local} in {name}");
                }
            }
        }
    }
    // Without the key nothing encrypted is read, and the report says so.
    let r = build(
        &dir.join("audit"),
        &dir.join("no.key"),
        dir,
        (&GeoIp::empty(), "not configured".into()),
        &options(None),
        &Shown::plain(false),
        t(NOW),
    )
    .unwrap();
    assert!(r.trail.encrypted_unread > 0);
    assert!(!r.trail.verification.ok);
    assert_eq!(r.gathered.logins.total.total(), 0);
}

#[test]
fn addresses_are_truncated_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_trail(dir, false);
    let r = report(dir, &options(None), &Shown::plain(true));
    assert_eq!(
        r.gathered.top_failing_addresses.rows[0].name,
        "203.0.113.0/24"
    );
    let json = String::from_utf8(json::render(&r).unwrap()).unwrap();
    assert!(!json.contains("203.0.113.200"));
    assert!(json.contains("2001:db8::/48"));
}

#[test]
fn csv_tables_parse_with_pythons_csv_module() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_trail(dir, false);
    let r = report(
        dir,
        &options(Some("alice@example.org")),
        &Shown::plain(false),
    );
    let csv_dir = dir.join("csv");
    write(&r, Format::Csv, Some(&csv_dir)).unwrap();
    let tables = csv::tables(&r);
    assert!(tables.len() >= 15);
    for table in &tables {
        let path = csv_dir.join(format!("{}.csv", table.name));
        // Python's csv module, strict: every row read back, cell for cell.
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import csv, json, sys\n\
                 with open(sys.argv[1], newline='') as f:\n\
                 \x20   print(json.dumps(list(csv.reader(f, strict=True))))",
            )
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows[0], table.header, "{}", table.name);
        assert_eq!(rows.len(), table.rows.len() + 1, "{}", table.name);
        for (read, want) in rows[1..].iter().zip(&table.rows) {
            let want: Vec<String> = want
                .iter()
                .map(|c| match c {
                    csv::Cell::Text(t) if t.starts_with(['=', '+', '-', '@']) => format!("'{t}"),
                    c => c.text(),
                })
                .collect();
            assert_eq!(read, &want, "{}", table.name);
        }
    }
    let days = std::fs::read_to_string(csv_dir.join("logins_by_day.csv")).unwrap();
    assert_eq!(
        days,
        "day,ok,failed,refused,total\r\n2026-11-26,2,0,0,2\r\n"
    );
}

#[test]
fn html_escapes_every_text_from_the_trail_and_fetches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_trail(dir, false);
    let r = report(dir, &options(None), &Shown::plain(false));
    let page = html::render(&r);
    assert!(!page.contains("<script"), "an account name became markup");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;@example.org"));
    assert!(!page.contains("<b>"));
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("src=") && !page.contains("<link"));
}

/// Runs `cmd` with a deadline; its output.
fn run_with_deadline(cmd: &mut Command, secs: u64) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (scripts/setup-debian installs it)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn chromium(profile: &Path, extra: &[String], url: &str) -> std::process::Output {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1024,1600",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    run_with_deadline(&mut cmd, 120)
}

/// A PNG's width, height and how many distinct bytes its decompressed scanlines hold
/// (a blank page has a handful).
fn png_facts(png: &[u8]) -> (u32, u32, usize) {
    use std::io::Read;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (mut at, mut idat, mut size) = (8, Vec::new(), (0, 0));
    while at + 8 <= png.len() {
        let len = be(&png[at..]) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => size = (be(data), be(&data[4..])),
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let mut seen = [false; 256];
    for b in &raw {
        seen[*b as usize] = true;
    }
    (size.0, size.1, seen.iter().filter(|s| **s).count())
}

#[test]
fn the_html_page_renders_its_charts_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_trail(dir, false);
    let r = report(dir, &options(None), &Shown::plain(false));
    let page = dir.join("report.html");
    write(&r, Format::Html, Some(&page)).unwrap();
    let bytes = std::fs::read_to_string(&page).unwrap();
    assert!(!bytes.contains("http://") && !bytes.contains("https://"));
    let url = format!("file://{}", page.display());

    let shot = dir.join("shot.png");
    let out = chromium(
        &dir.join("profile-shot"),
        &[format!("--screenshot={}", shot.display())],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    let (w, h, distinct) = png_facts(&png);
    assert!(w >= 800 && h >= 600, "{w}x{h}");
    assert!(
        distinct > 20,
        "the screenshot looks blank ({distinct} distinct bytes)"
    );

    let out = chromium(&dir.join("profile-dom"), &["--dump-dom".to_string()], &url);
    assert!(out.status.success());
    let dom = String::from_utf8_lossy(&out.stdout);
    for id in [
        "chart-days",
        "chart-countries",
        "chart-as",
        "chart-failing-addresses",
        "chart-failing-accounts",
        "chart-alerts",
    ] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "{id} not in the DOM");
    }
    assert!(
        dom.matches("<rect").count() >= 10,
        "the charts have no bars"
    );
    // The escaped account is text in the DOM, not an element.
    assert!(!dom.contains("<script>alert(1)"));
}
