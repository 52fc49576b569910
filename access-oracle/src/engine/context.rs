//! The context of an alert: what a person needs to act on the notification alone.
//!
//! Gathered by the responder when an alert is raised (rare: once per trip, never per
//! request) from what the engine already holds: the account's timeline (its recent
//! login attempts, with how each was made, and the messages it sent), the account's and
//! the address's holds, blocks and throttles, the GeoIP readers, and the reverse-DNS
//! *cache* (a name not cached is left out: nothing is looked up on this path). Each map
//! entry is read alone and released before the next is read (account, then address,
//! the documented lock order), and the lookups run after both are released.
//!
//! The undo commands are exact command lines: the account name quoted by
//! [`shell_word`], `--` before a name that starts with `-` (so `ctl` does not read it as
//! an option), and `--socket` when the daemon's admin socket is not the built-in one.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use jiff::Timestamp;

use super::Engine;
use super::respond::Subject;
use crate::alert::{Context, InForce, InForceKind, LoginSeen, RECENT_LOGINS, shell_word};
use crate::protocol::Outcome;
use crate::rules::RecipientCeiling;
use crate::state::{Entry, Hold, Secs};
use crate::track::timeline::{LoginDetail, TIMELINE_LEN};

const HOUR: Secs = 3600;
const DAY: Secs = 24 * HOUR;

/// What a trip's response put in force (or found in force and stronger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    /// What.
    pub what: InForceKind,
    /// On whom.
    pub on: Target,
    /// Until when.
    pub until: Secs,
}

/// The account or the address something is in force on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An account, by its key.
    Account(String),
    /// A source address.
    Ip(IpAddr),
}

/// The `ctl` command line of the daemon whose admin socket is `socket`: `access-oracle
/// ctl`, with `--socket PATH` unless it is the built-in default (which `ctl` finds
/// itself).
pub(crate) fn ctl_prefix(socket: &std::path::Path) -> String {
    let default = crate::config::RawConfig::default().server.admin_socket;
    if socket == default {
        "access-oracle ctl".into()
    } else {
        format!(
            "access-oracle ctl --socket {}",
            shell_word(&socket.to_string_lossy())
        )
    }
}

/// A login attempt copied out of the timeline, to be enriched after the lock is gone.
struct Attempted {
    time: Secs,
    protocol: Arc<str>,
    ip: Option<IpAddr>,
    result: Outcome,
    detail: Option<Box<LoginDetail>>,
}

impl Engine {
    /// The command that ends `target`'s hold, block or throttle now.
    pub(crate) fn undo_command(&self, target: &Target) -> String {
        match target {
            Target::Account(account) => {
                let dashes = if account.starts_with('-') { "-- " } else { "" };
                format!("{} release {dashes}{}", self.ctl, shell_word(account))
            }
            Target::Ip(ip) => format!("{} unblock {ip}", self.ctl),
        }
    }

    /// The context of an alert about `subject` at `now`, after `done` was applied.
    pub(crate) fn context(
        &self,
        subject: &Subject<'_>,
        done: Option<&Done>,
        action: Option<String>,
        now: Timestamp,
    ) -> Context {
        let secs = now.as_second();
        let mut c = Context::default();
        let mut attempts: Vec<Attempted> = Vec::new();
        let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
        if let Some(user) = subject.user
            && let Some(acct) = self.state.account(user)
        {
            let mut sent_1h = 0;
            let mut entries = 0;
            let mut oldest = None;
            for e in acct.timeline.entries() {
                entries += 1;
                match e {
                    Entry::Login {
                        time,
                        protocol,
                        ip,
                        result,
                        detail,
                        ..
                    } => {
                        oldest = oldest.or(Some(*time));
                        if *time > secs - DAY
                            && let Some(ip) = ip
                        {
                            addresses.insert(*ip);
                        }
                        attempts.push(Attempted {
                            time: *time,
                            protocol: protocol.clone(),
                            ip: *ip,
                            result: *result,
                            detail: detail.clone(),
                        });
                        if attempts.len() > RECENT_LOGINS {
                            attempts.remove(0);
                        }
                    }
                    Entry::Sent { time, rcpts, .. } => {
                        oldest = oldest.or(Some(*time));
                        if *time > secs - DAY {
                            c.messages_24h += 1;
                            c.recipients_24h += rcpts;
                        }
                        if *time > secs - HOUR {
                            c.messages_1h += 1;
                            sent_1h += rcpts;
                        }
                    }
                    Entry::Delivery { time, .. } | Entry::Session { time, .. } => {
                        oldest = oldest.or(Some(*time));
                    }
                }
            }
            // The recipient rules count every accepted recipient (live or from the
            // log) in their window: more exact than the timeline's messages, when
            // the window reaches back.
            let counted = acct.rcpts.count_since(secs - HOUR) as u64;
            c.recipients_1h = sent_1h.max(counted);
            c.recipients_24h = c.recipients_24h.max(c.recipients_1h);
            if entries >= TIMELINE_LEN
                && let Some(oldest) = oldest.filter(|&t| t > secs - DAY)
            {
                c.counted_since = Timestamp::from_second(oldest).ok();
            }
            let rules = self.rules();
            let target = || Target::Account(user.to_string());
            if let Some(h) = acct.active_hold(secs) {
                let what = if h.deny {
                    InForceKind::Deny
                } else {
                    InForceKind::Hold
                };
                c.in_force.push(self.in_force(what, &target(), h));
            }
            if let Some(t) = acct.throttle.as_ref().filter(|t| t.active(secs)) {
                c.in_force
                    .push(self.in_force(InForceKind::Throttle, &target(), t));
            }
            let ceiling = &rules.recipient_ceiling;
            if ceiling.enabled
                && let Some(until) = acct
                    .rcpts
                    .below_limit_at(ceiling.limit as usize, ceiling.window_secs as Secs)
                    .filter(|&t| t > secs)
            {
                c.in_force.push(InForce {
                    what: InForceKind::Ceiling,
                    on: user.to_string(),
                    rule: RecipientCeiling::NAME.into(),
                    until: ts(until),
                    undo: self.undo_command(&target()),
                });
            }
        }
        if let Some(ip) = subject.ip {
            let block = self.state.blocks().covering(ip, secs).map(|(_, b)| b.hold);
            if let Some(b) = block {
                let what = if b.deny {
                    InForceKind::Block
                } else {
                    InForceKind::Defer
                };
                c.in_force.push(self.in_force(what, &Target::Ip(ip), &b));
            }
        }
        // The locks are released: what follows reads the GeoIP files and the cache.
        let enrich = self.enrichment();
        let rdns = enrich.rdns.enabled().then_some(&enrich.rdns);
        let mut countries = BTreeSet::new();
        for ip in &addresses {
            if let Some(cc) = enrich.geoip.lookup(*ip).country {
                countries.insert(cc.as_str().to_string());
            }
        }
        c.addresses_24h = addresses.len() as u64;
        c.countries_24h = countries.into_iter().collect();
        c.recent_logins = attempts
            .into_iter()
            .rev()
            .map(|a| {
                let geo = a.ip.map(|ip| enrich.geoip.lookup(ip)).unwrap_or_default();
                let d = a.detail.unwrap_or_default();
                let text = |t: &Option<Arc<str>>| t.as_deref().map(str::to_string);
                LoginSeen {
                    time: ts(a.time),
                    protocol: a.protocol.to_string(),
                    ip: a.ip,
                    rdns: a
                        .ip
                        .zip(rdns)
                        .and_then(|(ip, r)| r.cached(ip, now))
                        .map(|n| n.to_string()),
                    country: geo.country.map(|c| c.as_str().to_string()),
                    asn: geo.asn,
                    as_org: geo.as_org.as_deref().map(str::to_string),
                    client: text(&d.client),
                    mechanism: text(&d.mech),
                    authenticator: text(&d.authenticator),
                    port: d.port,
                    local_port: d.local_port,
                    tls: d.tls,
                    tls_cipher: text(&d.cipher),
                    outcome: a.result,
                }
            })
            .collect();
        if let Some(done) = done {
            c.undo = Some(self.undo_command(&done.on));
        }
        c.action = action;
        c
    }

    fn in_force(&self, what: InForceKind, target: &Target, h: &Hold) -> InForce {
        InForce {
            what,
            on: match target {
                Target::Account(a) => a.clone(),
                Target::Ip(ip) => ip.to_string(),
            },
            rule: h.rule.to_string(),
            until: ts(h.until),
            undo: self.undo_command(target),
        }
    }
}

/// `secs` as a timestamp (the epoch for a value out of range, which the state never
/// holds).
fn ts(secs: Secs) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// What `done` means, in words, for an alert's context.
pub(crate) fn action_text(done: &Done) -> String {
    let until = ts(done.until);
    match (&done.on, done.what) {
        (Target::Account(a), InForceKind::Hold) => format!("account {a} held until {until}"),
        (Target::Account(a), InForceKind::Deny) => format!("account {a} refused until {until}"),
        (Target::Account(a), InForceKind::Throttle) => {
            format!("further recipients of account {a} deferred until {until}")
        }
        (Target::Account(a), InForceKind::Ceiling) => format!(
            "further recipients of account {a} deferred until {until} (the recipient ceiling's window)"
        ),
        (Target::Ip(ip), InForceKind::Block) => format!("address {ip} blocked until {until}"),
        (Target::Ip(ip), InForceKind::Defer) => {
            format!("authentication from {ip} deferred until {until}")
        }
        (Target::Account(a), what) => format!("{} on account {a} until {until}", what.as_str()),
        (Target::Ip(ip), what) => format!("{} on {ip} until {until}", what.as_str()),
    }
}

#[cfg(test)]
mod tests {
    //! Alerts with their context, on an injected clock: logins from two countries, a
    //! hold and its undo command, names a shell must not misread.

    use std::sync::Arc;

    use jiff::Timestamp;
    use tokio::sync::mpsc;

    use super::*;
    use crate::alert::Alert;
    use crate::config::{Config, RawConfig};
    use crate::engine::Enrichment;
    use crate::enrich::geoip::GeoIpConfig;
    use crate::enrich::{GeoIp, Rdns, RdnsConfig, Resolver};
    use crate::protocol::parse_line;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn engine_with(raw: RawConfig) -> (Engine, mpsc::Receiver<Arc<Alert>>) {
        let config = Config::from_raw(raw).unwrap();
        Engine::new(&config, t(0))
    }

    fn ask(e: &Engine, line: &str, at: i64) -> String {
        let cmd = parse_line(line.as_bytes()).unwrap_or_else(|err| panic!("{line}: {err}"));
        e.handle(&cmd, t(at)).to_string()
    }

    fn drain(rx: &mut mpsc::Receiver<Arc<Alert>>) -> Vec<Arc<Alert>> {
        let mut v = Vec::new();
        while let Ok(a) = rx.try_recv() {
            v.push(a);
        }
        v
    }

    /// The test GeoIP files: 192.0.2.0/24 Berlin (DE, AS64500), 198.51.100.0/24 New
    /// York (US, AS64501).
    fn geoip(dir: &std::path::Path) -> Arc<GeoIp> {
        let (city, asn) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
        geo_fixtures::write_city_db(&city).unwrap();
        geo_fixtures::write_asn_db(&asn).unwrap();
        Arc::new(
            GeoIp::open(&GeoIpConfig {
                city_db: Some(city),
                asn_db: Some(asn),
                ..GeoIpConfig::default()
            })
            .unwrap(),
        )
    }

    const BERLIN: &str = "192.0.2.10";
    const NEW_YORK: &str = "198.51.100.7";

    /// A resolver that names Berlin's address only.
    struct Names;
    impl Resolver for Names {
        fn reverse(&self, ip: IpAddr) -> std::io::Result<Option<String>> {
            Ok((ip.to_string() == BERLIN).then(|| "laptop.dsl.example.de".into()))
        }
        fn forward(&self, _name: &str) -> std::io::Result<Vec<IpAddr>> {
            Ok(vec![BERLIN.parse().unwrap()])
        }
    }

    /// Alice logs in from Berlin over SMTP (with everything the library sends), sends
    /// two messages, then five wrong IMAP passwords from New York hold her: the alert
    /// shows both logins with their places and how they were made, the sending, the
    /// hold in force, and the command that ends it.
    #[tokio::test]
    async fn an_alert_after_logins_from_two_countries_has_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let (rdns, worker) = Rdns::with_resolver(
            &RdnsConfig {
                enabled: true,
                cache_secs: 86_400,
                ..RdnsConfig::default()
            },
            Arc::new(Names),
        );
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(worker.with_clock(Arc::new(|| t(0))).run(stop_rx));
        let (e, mut rx) = engine_with(RawConfig::default());
        e.set_enrichment(Enrichment {
            geoip: geoip(dir.path()),
            rdns: rdns.clone(),
            ..Enrichment::default()
        });
        let smtp = format!(
            "auth user=alice ip={BERLIN} result=ok mech=PLAIN authenticator=access_plain \
             port=40123 local_port=587 helo=laptop.example tls=TLS1.3:TLS_AES_256_GCM_SHA384:256"
        );
        assert_eq!(ask(&e, &smtp, 0), "accept");
        // The name is resolved in the background (the login asked for it).
        let berlin: IpAddr = BERLIN.parse().unwrap();
        for _ in 0..500 {
            if rdns.cached(berlin, t(1)).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(rdns.cached(berlin, t(1)).is_some(), "the name is cached");
        ask(
            &e,
            &format!("data user=alice ip={BERLIN} rcpts=3 msgid=1a-01"),
            10,
        );
        ask(
            &e,
            &format!("data user=alice ip={BERLIN} rcpts=2 msgid=1a-02"),
            5000,
        );
        for i in 0..5 {
            let line = format!(
                "login user=alice ip={NEW_YORK} result=fail protocol=imap mech=PLAIN \
                 port=5000{i} local_port=993 tls=1 client=Outlook session=s{i} pwhash=00{i}"
            );
            ask(&e, &line, 7000 + i);
        }
        let alerts = drain(&mut rx);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.rule, "failed_logins_account");
        let c = a.context.as_deref().expect("every alert has its context");

        assert_eq!(c.recent_logins.len(), 6);
        let newest = &c.recent_logins[0];
        assert_eq!(newest.time, t(7004));
        assert_eq!(newest.protocol, "imap");
        assert_eq!(newest.ip, NEW_YORK.parse().ok());
        assert_eq!(newest.country.as_deref(), Some("US"));
        assert_eq!(newest.asn, Some(64501));
        assert_eq!(newest.as_org.as_deref(), Some("Example Net US"));
        assert_eq!(newest.rdns, None, "not cached, and not looked up");
        assert_eq!(newest.outcome, Outcome::Fail);
        assert_eq!(newest.mechanism.as_deref(), Some("PLAIN"));
        assert_eq!((newest.port, newest.local_port), (Some(50004), Some(993)));
        assert_eq!(
            (newest.tls, newest.tls_cipher.as_deref()),
            (Some(true), None)
        );
        assert_eq!(newest.client.as_deref(), Some("Outlook"));
        let oldest = &c.recent_logins[5];
        assert_eq!(oldest.time, t(0));
        assert_eq!(oldest.protocol, "smtp");
        assert_eq!(oldest.outcome, Outcome::Ok);
        assert_eq!(oldest.rdns.as_deref(), Some("laptop.dsl.example.de"));
        assert_eq!(oldest.country.as_deref(), Some("DE"));
        assert_eq!(oldest.asn, Some(64500));
        assert_eq!(oldest.mechanism.as_deref(), Some("PLAIN"));
        assert_eq!(oldest.authenticator.as_deref(), Some("access_plain"));
        assert_eq!((oldest.port, oldest.local_port), (Some(40123), Some(587)));
        assert_eq!(oldest.tls, Some(true));
        assert_eq!(
            oldest.tls_cipher.as_deref(),
            Some("TLS1.3:TLS_AES_256_GCM_SHA384:256")
        );
        assert_eq!(oldest.client.as_deref(), Some("laptop.example"));

        assert_eq!((c.messages_1h, c.recipients_1h), (1, 2));
        assert_eq!((c.messages_24h, c.recipients_24h), (2, 5));
        assert_eq!(c.addresses_24h, 2);
        assert_eq!(c.countries_24h, ["DE", "US"]);
        assert_eq!(c.counted_since, None, "the timeline is not full");

        let until = t(7004 + 900);
        assert_eq!(
            c.in_force,
            [InForce {
                what: InForceKind::Hold,
                on: "alice".into(),
                rule: "failed_logins_account".into(),
                until,
                undo: "access-oracle ctl release alice".into(),
            }]
        );
        assert_eq!(
            c.action.as_deref(),
            Some(format!("account alice held until {until}").as_str())
        );
        assert_eq!(c.undo.as_deref(), Some("access-oracle ctl release alice"));

        // As a person reads it, and as the JSON of alerts.jsonl and `ctl alerts`.
        let text = a.describe();
        for part in [
            "Undo with: access-oracle ctl release alice",
            "Done:      account alice held until",
            "in DE, US",
            "smtp       ok   192.0.2.10 (laptop.dsl.example.de) DE AS64500 Example Net DE PLAIN via access_plain client port 40123 to port 587 TLS TLS1.3",
            "imap       FAIL 198.51.100.7 US AS64501",
            "hold on alice by failed_logins_account until",
        ] {
            assert!(text.contains(part), "{part:?} in\n{text}");
        }
        let json = serde_json::to_value(&**a).unwrap();
        assert_eq!(
            json["context"]["recent_logins"][5]["authenticator"],
            "access_plain"
        );
        assert_eq!(json["context"]["in_force"][0]["what"], "hold");
        let view = crate::admin::views::AlertView::from(&**a);
        let back: crate::admin::views::AlertView =
            serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap();
        assert_eq!(back, view);

        // The address is blocked later: the next alert shows both, each with its undo.
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// An address rule: the block is what was done, `ctl unblock` undoes it, and an
    /// admin socket elsewhere than the default is named in the command.
    #[test]
    fn a_blocked_address_is_undone_with_unblock_on_the_daemons_socket() {
        let mut raw = RawConfig::default();
        raw.server.admin_socket = "/srv/mail oracle/admin.sock".into();
        let (e, mut rx) = engine_with(raw);
        for i in 0..20 {
            ask(
                &e,
                &format!(
                    "auth user=u{} ip={NEW_YORK} result=fail pwhash=0{i:03}",
                    i % 3
                ),
                i,
            );
        }
        let alerts = drain(&mut rx);
        let ip_alert = alerts
            .iter()
            .find(|a| a.rule == "failed_logins_ip")
            .expect("the address rule fired");
        let c = ip_alert.context.as_deref().unwrap();
        let undo =
            format!("access-oracle ctl --socket '/srv/mail oracle/admin.sock' unblock {NEW_YORK}");
        assert_eq!(c.undo.as_deref(), Some(undo.as_str()));
        assert!(
            c.action.as_deref().is_some_and(
                |a| a.starts_with(&format!("authentication from {NEW_YORK} deferred until"))
            ),
            "{c:?}"
        );
        assert!(
            c.in_force
                .iter()
                .any(|f| f.what == InForceKind::Defer && f.on == NEW_YORK && f.undo == undo),
            "{c:?}"
        );
    }

    /// Exim's log adds what the live request did not know (the authenticator, the
    /// client's port, TLS) to the attempt it already counted; an attempt only the log
    /// saw keeps what its line says. Both show in `ctl account`'s timeline.
    #[test]
    fn log_lines_complete_and_carry_how_attempts_were_made() {
        use crate::sources::{Format, LineContext, parse_line};
        let (e, _rx) = engine_with(RawConfig::default());
        let live = format!("auth user=alice ip={BERLIN} result=ok mech=PLAIN helo=laptop.example");
        assert_eq!(ask(&e, &live, 0), "accept");
        let ctx = LineContext::new("/var/log/exim4/mainlog", jiff::tz::TimeZone::UTC, t(60));
        for line in [
            format!(
                "2027-01-15 08:00:05 1tQx01-000001-AB <= alice@example.org H=(laptop.example) [{BERLIN}]:40123 I=[192.0.2.1]:587 P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=access_plain:alice S=1234 id=x@example.org for bob@example.net"
            ),
            format!(
                "2027-01-15 08:00:30 access_login authenticator failed for (pc) [{NEW_YORK}]:50123 I=[192.0.2.1]:587: 535 Incorrect authentication data (set_id=alice)"
            ),
        ] {
            for ev in parse_line(Format::Exim, line.as_bytes(), &ctx).into_events() {
                e.observe(&ev);
            }
        }
        let view = crate::admin::views::account(&e, "alice", t(60));
        let logins: Vec<_> = view
            .live
            .unwrap()
            .timeline
            .into_iter()
            .filter_map(|entry| match entry {
                crate::admin::views::TimelineEntry::Login {
                    ip,
                    origin,
                    mech,
                    authenticator,
                    port,
                    local_port,
                    tls,
                    client,
                    ..
                } => Some((
                    ip,
                    origin,
                    mech,
                    authenticator,
                    port,
                    local_port,
                    tls,
                    client,
                )),
                _ => None,
            })
            .collect();
        use crate::state::Origin;
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            logins,
            [
                (
                    BERLIN.parse().ok(),
                    Origin::Live,
                    s("PLAIN"),
                    s("access_plain"),
                    Some(40123),
                    Some(587),
                    Some(true),
                    s("laptop.example")
                ),
                (
                    NEW_YORK.parse().ok(),
                    Origin::Log,
                    None,
                    s("access_login"),
                    Some(50123),
                    Some(587),
                    None,
                    s("pc")
                ),
            ]
        );
    }

    /// How `bash` splits `command` into words.
    fn words_of(command: &str) -> Vec<String> {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf '%s\\0' {command}"))
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{command}: {out:?}");
        let mut words: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect();
        // After the last word's NUL.
        assert_eq!(words.pop().as_deref(), Some(""));
        words
    }

    /// Account names with a quote, a space, shell syntax, a leading dash, a backslash,
    /// terminal escapes: the undo command names each exactly (as bash reads it and as
    /// `ctl`'s own command line parses it), runs nothing else, and shows as plain text.
    #[test]
    fn an_account_name_with_shell_syntax_gets_a_safely_quoted_undo() {
        let (e, mut rx) = engine_with(RawConfig::default());
        let names = [
            "o'brien smith",
            "$(touch /tmp/pwned)`id`;rm -rf ~",
            "-x",
            "back\\slash \"quoted\"",
            "mallory\x1b]0;pwned\x07\u{9b}31m\u{202e}",
            "zoë@example.org",
            "",
        ];
        for (n, name) in names.iter().enumerate() {
            let quoted = format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
            for i in 0..5 {
                let line =
                    format!("auth user={quoted} ip=192.0.2.{n} result=fail pwhash={n}{i:03}");
                ask(&e, &line, i64::try_from(n * 10).unwrap() + i);
            }
        }
        let alerts = drain(&mut rx);
        for name in names {
            let a = alerts
                .iter()
                .find(|a| a.rule == "failed_logins_account" && a.account.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no hold alert for {name:?}: {alerts:?}"));
            let undo = a.context.as_deref().and_then(|c| c.undo.clone()).unwrap();
            assert!(undo.starts_with("access-oracle ctl release "), "{undo}");
            // Shown as it is: nothing a terminal acts on.
            assert!(
                !undo
                    .chars()
                    .any(|c| c != '\\' && crate::text::needs_escape(c)),
                "{undo:?}"
            );
            assert!(
                a.describe().contains(&format!("Undo with: {undo}")),
                "{undo}"
            );
            // bash reads back the name exactly, and ctl's command line the request.
            let words = words_of(&undo);
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&words)
                .unwrap_or_else(|err| panic!("{undo}: {err}"));
            match cli.command {
                crate::cli::Command::Ctl {
                    request: crate::cli::CtlRequest::Release { user },
                    socket: None,
                    ..
                } => assert_eq!(user, name, "{undo}"),
                other => panic!("{undo}: {other:?}"),
            }
        }
        assert!(!std::path::Path::new("/tmp/pwned").exists());
        // Plain names stay plain; POSIX sh reads the single-quoted form the same.
        assert_eq!(shell_word("alice@example.org"), "alice@example.org");
        assert_eq!(shell_word("o'brien smith"), "'o'\"'\"'brien smith'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_word("o'brien $(id) smith")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"o'brien $(id) smith");
    }
}
