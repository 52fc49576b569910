//! What parsing an Exim mainlog costs: `sources::parse_line(Format::Exim, ..)` over a
//! generated mainlog of a busy server, on one core, lines held in memory.
//!
//! Run: `cargo bench -p access-oracle --bench parse`. `-- --write PATH` also writes the
//! generated log to PATH (for `scripts/bench-parse`, which runs `access-oracle parse
//! --stats` and `fail2ban-regex` on it); `-- --lines N` sets its size (default
//! 1,200,000). Results are in `docs/PERFORMANCE.md`, section "Log parsing (issue 3)".
//!
//! The log is deterministic (a fixed-seed LCG): sessions of a mail server with both MX
//! and submission traffic, in the shapes Exim 4.96 writes with Debian's default
//! `log_selector` plus `+smtp_connection` (connection lines; some with `+incoming_port`):
//! arrivals with and without `A=`, local and remote deliveries (`=>`, `->`), deferrals,
//! bounces with their bounce messages, `Completed`, rejected RCPT, connection and
//! close lines, and brute-force `authenticator failed ... 535` lines (a few % of all).
//!
//! Before timing, one counting pass checks that every line was understood (no
//! unrecognised or dead-lettered line) and that the oracle found exactly the failures
//! the generator wrote: a benchmark of a parser that skips lines would be fast and wrong.
//! Without `--bench` (`cargo test --benches`) it runs on 20,000 lines once, as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use access_oracle::sources::{Format, LineContext, ParseStats, parse_line};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A 64-bit LCG (Knuth's MMIX constants): deterministic and dependency-free.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "info", "sales",
    "admin", "support", "office",
];
const REMOTE_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "web.de",
    "gmx.net",
    "example.net",
    "remote.test",
    "mail.ru",
    "orange.fr",
];
const MX_HOSTS: &[&str] = &[
    "mail-wr1-f54.google.com",
    "mail-eopbgr80071.outbound.protection.outlook.com",
    "sonic301-20.consmr.mail.ir2.yahoo.com",
    "mout.web.de",
    "mout.gmx.net",
    "mx.example.net",
    "smtp.remote.test",
];
const BRUTE_HELOS: &[&str] = &["User", "ylmf-pc", "WIN-CLJ1B0GQ6JP", "localhost", "ADMIN"];
const AUTHENTICATORS: &[&str] = &["dovecot_plain", "dovecot_login", "plain_server", "login"];
const REJECT_REASONS: &[&str] = &[
    "relay not permitted",
    "Unrouteable address",
    "Unknown user",
    "JunkMail rejected - 203.0.113.9 is listed in zen.spamhaus.org",
];

/// What the generator wrote, to check the parser against.
#[derive(Default)]
struct Written {
    lines: u64,
    auth_fail: u64,
    auth_ok: u64,
}

struct Gen {
    rng: Lcg,
    /// Seconds since the start of the log (2026-11-01 00:00:00).
    secs: u64,
    /// Message counter, for ids.
    msgs: u64,
    out: Vec<u8>,
    written: Written,
}

impl Gen {
    fn stamp(&mut self) -> String {
        // About 14 lines a second: a million lines is about a day.
        if self.rng.below(14) == 0 {
            self.secs += 1;
        }
        let s = self.secs;
        let (day, rest) = (1 + s / 86_400, s % 86_400);
        let pid = 1000 + self.rng.below(60_000);
        // Half the lines with `+pid`, as on servers that log it.
        if self.msgs % 2 == 0 {
            format!(
                "2026-11-{day:02} {:02}:{:02}:{:02} [{pid}]",
                rest / 3600,
                rest / 60 % 60,
                rest % 60
            )
        } else {
            format!(
                "2026-11-{day:02} {:02}:{:02}:{:02}",
                rest / 3600,
                rest / 60 % 60,
                rest % 60
            )
        }
    }

    fn line(&mut self, body: &str) {
        let stamp = self.stamp();
        self.out.extend_from_slice(stamp.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(body.as_bytes());
        self.out.push(b'\n');
        self.written.lines += 1;
    }

    fn msgid(&mut self) -> String {
        const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let enc = |mut v: u64, n: usize| {
            let mut s = vec![b'0'; n];
            for c in s.iter_mut().rev() {
                *c = B62[(v % 62) as usize];
                v /= 62;
            }
            String::from_utf8(s).expect("base62")
        };
        self.msgs += 1;
        let t = 1_790_000_000 + self.secs;
        let pid = self.rng.below(4_000_000);
        let frac = self.rng.below(62 * 62);
        format!("{}-{}-{}", enc(t, 6), enc(pid, 6), enc(frac, 2))
    }

    fn ip(&mut self) -> String {
        if self.rng.below(10) == 0 {
            format!(
                "2001:db8:{:x}::{:x}",
                self.rng.below(0xffff),
                1 + self.rng.below(0xfffe)
            )
        } else {
            format!(
                "{}.{}.{}.{}",
                1 + self.rng.below(222),
                self.rng.below(256),
                self.rng.below(256),
                1 + self.rng.below(254)
            )
        }
    }

    /// `[ip]` or `[ip]:port` (`+incoming_port` on some lines).
    fn addr(&mut self, ip: &str) -> String {
        if self.rng.below(3) == 0 {
            format!("[{ip}]:{}", 1024 + self.rng.below(64_000))
        } else {
            format!("[{ip}]")
        }
    }

    fn local(&mut self) -> String {
        format!("{}@example.org", self.rng.pick(USERS))
    }

    fn remote(&mut self) -> String {
        let user = self.rng.pick(USERS);
        let n = self.rng.below(1000);
        format!("{user}{n}@{}", self.rng.pick(REMOTE_DOMAINS))
    }

    fn connect(&mut self, host: &str) {
        let n = 1 + self.rng.below(40);
        self.line(&format!(
            "SMTP connection from {host} (TCP/IP connection count = {n})"
        ));
    }

    /// A message from a remote MTA to local users.
    fn inbound(&mut self) {
        let ip = self.ip();
        let mx = self.rng.pick(MX_HOSTS);
        let addr = self.addr(&ip);
        let host = format!("{mx} {addr}");
        self.connect(&host);
        let id = self.msgid();
        let from = self.remote();
        let size = 800 + self.rng.below(200_000);
        let rcpts: Vec<String> = (0..1 + self.rng.below(3)).map(|_| self.local()).collect();
        let tls = if self.rng.below(4) == 0 {
            String::new()
        } else {
            " X=TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256 CV=no".into()
        };
        let mid = self.rng.next();
        self.line(&format!(
            "{id} <= {from} H={host}{tls} P=esmtps S={size} id={mid:x}@{mx} for {}",
            rcpts.join(" ")
        ));
        for (i, r) in rcpts.iter().enumerate() {
            let user = r.split('@').next().unwrap_or("x");
            let arrow = if i == 0 { "=>" } else { "->" };
            self.line(&format!(
                "{id} {arrow} {user} <{r}> R=local_user T=maildir_home"
            ));
        }
        self.line(&format!("{id} Completed"));
        self.line(&format!("SMTP connection from {host} closed by QUIT"));
    }

    /// A message a local user submits (AUTH, `A=`), delivered to remote hosts.
    fn submission(&mut self) {
        let ip = self.ip();
        let addr = self.addr(&ip);
        let user = self.rng.pick(USERS);
        let helo = if self.rng.below(2) == 0 {
            format!("[{ip}]")
        } else {
            format!("{user}-laptop")
        };
        let host = format!("({helo}) {addr}");
        self.connect(&host);
        let id = self.msgid();
        let auth = self.rng.pick(AUTHENTICATORS);
        let size = 500 + self.rng.below(50_000);
        let mid = self.rng.next();
        self.line(&format!(
            "{id} <= {user}@example.org H={host} P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A={auth}:{user} S={size} id={mid:x}@example.org"
        ));
        self.written.auth_ok += 1;
        let mut done = true;
        for i in 0..1 + self.rng.below(4) {
            let r = self.remote();
            let mx = self.rng.pick(MX_HOSTS);
            let mx_ip = self.ip();
            match self.rng.below(40) {
                0 | 1 => {
                    done = false;
                    self.line(&format!(
                        "{id} == {r} R=dnslookup T=remote_smtp defer (-44) H={mx} [{mx_ip}]: SMTP error from remote mail server after RCPT TO:<{r}>: 451 4.7.1 Greylisted, try again later"
                    ));
                }
                2 => {
                    self.line(&format!(
                        "{id} ** {r} R=dnslookup T=remote_smtp H={mx} [{mx_ip}] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes: SMTP error from remote mail server after RCPT TO:<{r}>: 550 5.1.1 <{r}>: Recipient address rejected: User unknown"
                    ));
                    let bid = self.msgid();
                    let size = 1500 + self.rng.below(4000);
                    self.line(&format!(
                        "{bid} <= <> R={id} U=Debian-exim P=local S={size}"
                    ));
                    self.line(&format!(
                        "{bid} => {user} <{user}@example.org> R=local_user T=maildir_home"
                    ));
                    self.line(&format!("{bid} Completed"));
                }
                _ => {
                    let arrow = if i == 0 { "=>" } else { "->" };
                    let queued = self.rng.next();
                    self.line(&format!(
                        "{id} {arrow} {r} R=dnslookup T=remote_smtp H={mx} [{mx_ip}] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 2.0.0 OK {queued:x} - gsmtp\""
                    ));
                }
            }
        }
        if done {
            self.line(&format!("{id} Completed"));
        }
        self.line(&format!("SMTP connection from {host} closed by QUIT"));
    }

    /// A spammer or a misaddressed sender: RCPTs refused, no message.
    fn rejected(&mut self) {
        let ip = self.ip();
        let addr = self.addr(&ip);
        let helo = self.rng.pick(BRUTE_HELOS);
        let host = format!("({helo}) {addr}");
        self.connect(&host);
        let from = self.remote();
        for _ in 0..1 + self.rng.below(2) {
            let reason = self.rng.pick(REJECT_REASONS);
            let rcpt = if reason == "relay not permitted" {
                self.remote()
            } else {
                format!("nosuch{}@example.org", self.rng.below(100))
            };
            self.line(&format!(
                "H={host} F=<{from}> rejected RCPT <{rcpt}>: {reason}"
            ));
        }
        if self.rng.below(2) == 0 {
            let d = 1 + self.rng.below(30);
            self.line(&format!(
                "no MAIL in SMTP connection from {host} D={d}s C=EHLO,MAIL,RCPT,QUIT"
            ));
        } else {
            self.line(&format!("SMTP connection from {host} lost"));
        }
    }

    /// A password guesser: a few `authenticator failed` lines on one connection.
    fn brute(&mut self) {
        let ip = self.ip();
        let addr = self.addr(&ip);
        let helo = match self.rng.below(3) {
            0 => format!("[{ip}]"),
            _ => self.rng.pick(BRUTE_HELOS).to_string(),
        };
        let host = if self.rng.below(5) == 0 {
            format!("scan-{}.example.com ({helo}) {addr}", self.rng.below(999))
        } else {
            format!("({helo}) {addr}")
        };
        self.connect(&host);
        for _ in 0..1 + self.rng.below(3) {
            let auth = self.rng.pick(AUTHENTICATORS);
            let user = if self.rng.below(2) == 0 {
                self.local()
            } else {
                self.rng.pick(USERS).to_string()
            };
            self.line(&format!(
                "{auth} authenticator failed for {host}: 535 Incorrect authentication data (set_id={user})"
            ));
            self.written.auth_fail += 1;
        }
        self.line(&format!("SMTP connection from {host} lost"));
    }
}

/// Generates a mainlog of at least `lines` lines.
fn generate(lines: u64) -> (Vec<u8>, Written) {
    let mut g = Gen {
        rng: Lcg(0x5eed_0fe7_1a00),
        secs: 0,
        msgs: 0,
        out: Vec::with_capacity(lines as usize * 160),
        written: Written::default(),
    };
    while g.written.lines < lines {
        match g.rng.below(100) {
            0..=44 => g.inbound(),
            45..=69 => g.submission(),
            70..=90 => g.rejected(),
            _ => g.brute(),
        }
    }
    (g.out, g.written)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let write = value("--write");
    let lines: u64 = match value("--lines") {
        Some(n) => n.parse().expect("--lines N"),
        None if bench || write.is_some() => 1_200_000,
        None => 20_000,
    };

    let t = Instant::now();
    let (log, written) = generate(lines);
    eprintln!(
        "generated {} lines ({:.1} MiB) in {:.2} s",
        written.lines,
        log.len() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    if let Some(path) = &write {
        std::fs::write(path, &log).expect("writing the log");
        eprintln!("written to {path}");
    }
    let lines: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let ctx = LineContext::new(
        "mainlog",
        TimeZone::UTC,
        "2026-12-01T00:00:00Z".parse::<Timestamp>().expect("time"),
    );

    // Check: every line understood, every failure found.
    let mut stats = ParseStats::default();
    for line in &lines {
        stats.record(&parse_line(Format::Exim, line, &ctx));
    }
    assert_eq!(stats.lines, written.lines);
    assert_eq!(stats.unrecognised, 0, "unrecognised lines");
    assert_eq!(
        stats.dead_lettered(),
        0,
        "dead letters: {:?}",
        stats.dead_letters
    );
    assert_eq!(stats.auth_fail, written.auth_fail, "auth failures found");
    assert_eq!(stats.auth_ok, written.auth_ok, "auth successes found");

    let passes = if bench { 3 } else { 1 };
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let t = Instant::now();
        for line in &lines {
            black_box(parse_line(Format::Exim, black_box(line), &ctx));
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let n = lines.len() as f64;
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, v) in &stats.events {
        kinds.insert(k.as_str(), *v);
    }
    println!(
        "exim parse_line: {} lines, {:.1} MiB, best of {passes}: {:.3} s, {:.0} lines/s, {:.0} ns/line, {:.0} MiB/s",
        lines.len(),
        log.len() as f64 / (1 << 20) as f64,
        best,
        n / best,
        best * 1e9 / n,
        log.len() as f64 / (1 << 20) as f64 / best
    );
    println!(
        "  events: {}",
        kinds
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  auth failures: {} ({:.1} % of lines), auth ok: {}, irrelevant: {}, unrecognised: {}, dead-lettered: {}",
        stats.auth_fail,
        stats.auth_fail as f64 * 100.0 / n,
        stats.auth_ok,
        stats.irrelevant,
        stats.unrecognised,
        stats.dead_lettered()
    );
}
