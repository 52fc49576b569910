//! The decision engine: a request and `now` in, a verdict out, rules applied on the way.
//!
//! For each request the verdict is decided from the state *before* the request (a hold,
//! a block, the recipient ceiling), then the request is recorded and the rules run. So a
//! rule that trips never changes the outcome of the request that tripped it (the fifth
//! wrong password still gets Exim's 535); its response applies from the next request.
//! Alerts go to a bounded queue; the verdict never waits for a sink.

mod context;
pub mod gate;
mod observe;
pub mod policy;
mod respond;
pub mod stats;
pub mod storage;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use jiff::Timestamp;
use tokio::sync::mpsc;

use ipnet::IpNet;

use crate::actions::{Actions, Step};
use crate::alert::Alert;
use crate::audit::{self, AuditSink};
use crate::config::Config;
use crate::config::responses::ResponsesConfig;
use crate::enrich::disabled::{Disabled, DisabledAccounts};
use crate::enrich::{GeoInfo, GeoIp, IpLists};
use crate::protocol::{Command, Outcome, Reply};
use crate::rules::RecipientCeiling;
use crate::rules::bad_ip::BadIp;
use crate::rules::disabled_credentials::DisabledCredentials;
use crate::rules::{AccountSlots, Failure, LoginOk, Recipients, RulesConfig, Trip};
use crate::state::baseline::BaselineConfig;
use crate::state::{Account, Block, Entry, Hold, Origin, Secs, State};
pub use observe::{Observed, UNKNOWN_PROTOCOL};
pub use stats::Stats;

/// The engine: state, rules and the alert queue, shared by every connection.
pub struct Engine {
    rules: RwLock<Arc<RulesConfig>>,
    baseline_config: RwLock<Arc<BaselineConfig>>,
    enrichment: RwLock<Arc<Enrichment>>,
    case_sensitive: bool,
    state: State,
    alerts: mpsc::Sender<Arc<Alert>>,
    recent: Mutex<VecDeque<Arc<Alert>>>,
    recent_cap: usize,
    /// Counters.
    pub stats: Stats,
    started: Timestamp,
    /// Exim message ids of messages sent by accounts, for their deliveries and bounces.
    messages: dashmap::DashMap<Box<str>, (Box<str>, Secs)>,
    /// Dovecot sessions: failed attempts their auth lines reported, and when last seen.
    sessions: dashmap::DashMap<Box<str>, (u32, Secs)>,
    /// The audit trail's writer, when it is on.
    audit: OnceLock<AuditSink>,
    /// `[responses]`: enforce or observe, how blocks are sized.
    responses: RwLock<Arc<ResponsesConfig>>,
    /// External actions on blocks (firewall, fail2ban, CrowdSec), when any run.
    actions: OnceLock<Actions>,
    /// The state journal, when it is on (set once, after the replay).
    journal: OnceLock<Arc<crate::persist::journal::JournalFile>>,
    /// Whether any rule, or `[responses]`, observes: the gate reads the modes only then.
    observing: std::sync::atomic::AtomicBool,
    /// Observe mode: until when what a rule would have done to an account or an address
    /// network would be in force, by rule and target (its alert is not repeated).
    observed: dashmap::DashMap<(&'static str, Box<str>), Secs>,
    /// `access-oracle ctl` as an alert's undo command starts (with `--socket` when
    /// the admin socket is not the default).
    ctl: Box<str>,
    /// The parts that cannot write now (snapshot, audit trail, journal).
    storage: storage::Episodes,
}

/// What the engine knows from outside: GeoIP/ASN, address lists, disabled accounts.
/// Each part reloads itself; the set is replaced whole when the config names other files.
pub struct Enrichment {
    /// GeoIP and ASN databases.
    pub geoip: Arc<GeoIp>,
    /// Block and allow lists.
    pub lists: Arc<IpLists>,
    /// The disabled-accounts file.
    pub disabled: Arc<DisabledAccounts>,
    /// Reverse DNS (names for alerts), resolved in the background.
    pub rdns: Arc<crate::enrich::Rdns>,
    /// The ban decisions of a CrowdSec Local API (`[crowdsec]`), kept by its poller.
    pub crowdsec: Arc<crate::enrich::crowdsec::Decisions>,
}

impl Default for Enrichment {
    fn default() -> Self {
        Enrichment {
            geoip: Arc::new(GeoIp::empty()),
            lists: Arc::new(IpLists::empty()),
            disabled: Arc::new(DisabledAccounts::empty()),
            rdns: crate::enrich::Rdns::new(&crate::enrich::RdnsConfig::default()).0,
            crowdsec: Arc::default(),
        }
    }
}

/// A login attempt, from SMTP AUTH or another protocol, live or from a log.
pub(crate) struct Attempt<'a> {
    pub(crate) user: &'a str,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) result: Outcome,
    pub(crate) pwhash: Option<u64>,
    pub(crate) protocol: &'a str,
    pub(crate) session: Option<&'a str>,
    pub(crate) origin: Origin,
    /// The client's name (HELO, IMAP ID), for the baseline.
    pub(crate) client: Option<&'a str>,
    /// The caller says the account is disabled.
    pub(crate) disabled: bool,
    /// For a log event: the file and the line's offset, for the audit trail.
    pub(crate) line: Option<(&'a str, u64)>,
    /// How the attempt was made, for the timeline and the audit trail.
    pub(crate) via: Via<'a>,
}

/// How a login attempt was made, as its request or log line says: kept in the account's
/// timeline and the audit record so that an alert's context can show it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Via<'a> {
    /// The SASL mechanism.
    pub(crate) mech: Option<&'a str>,
    /// Exim's authenticator.
    pub(crate) authenticator: Option<&'a str>,
    /// The client's source port.
    pub(crate) port: Option<u16>,
    /// The server port the client connected to.
    pub(crate) local_port: Option<u16>,
    /// Whether the connection was encrypted, when known.
    pub(crate) tls: Option<bool>,
    /// The TLS cipher, when named.
    pub(crate) cipher: Option<&'a str>,
}

impl<'a> Via<'a> {
    /// `tls` and `cipher` from a request's `tls=` text: the cipher (TLS), `1` / `yes` /
    /// `true` (TLS, unnamed), empty or `0` / `no` / `false` (none); absent: unknown.
    pub(crate) fn with_tls_text(mut self, tls: Option<&'a str>) -> Via<'a> {
        match tls {
            None => {}
            Some("" | "0" | "no" | "false") => self.tls = Some(false),
            Some("1" | "yes" | "true") => self.tls = Some(true),
            Some(cipher) => {
                self.tls = Some(true);
                self.cipher = Some(cipher);
            }
        }
        self
    }
}

impl Attempt<'_> {
    /// What the timeline keeps of how the attempt was made (texts shared or cut short).
    fn detail(&self) -> crate::track::timeline::LoginDetail {
        use crate::track::timeline::{MAX_CLIENT_BYTES, MAX_DETAIL_BYTES, bounded_arc, mech_arc};
        let text = |t: Option<&str>, max| t.filter(|t| !t.is_empty()).map(|t| bounded_arc(t, max));
        let v = &self.via;
        crate::track::timeline::LoginDetail {
            mech: v.mech.filter(|m| !m.is_empty()).map(mech_arc),
            authenticator: text(v.authenticator, MAX_DETAIL_BYTES),
            port: v.port.filter(|&p| p != 0),
            local_port: v.local_port.filter(|&p| p != 0),
            tls: v.tls.or(v.cipher.map(|_| true)),
            cipher: text(v.cipher, MAX_CLIENT_BYTES),
            client: text(self.client, MAX_CLIENT_BYTES),
        }
    }
}

/// The reply for a refusal of the [`gate`].
/// The refusal for an address a CrowdSec decision bans at `secs`: refused like a
/// listed one, its text naming the decision's scenario.
fn crowdsec_refusal(enrich: &Enrichment, ip: IpAddr, secs: Secs) -> Option<gate::Refused> {
    enrich.crowdsec.banned(ip, secs).map(|b| gate::Refused {
        rule: "crowdsec",
        message: b.text,
        deny: b.deny,
    })
}

fn refused_reply(r: &gate::Refused) -> Reply {
    if r.deny {
        Reply::Deny(r.message.to_string())
    } else {
        Reply::Defer(r.message.to_string())
    }
}

/// Recipients counted by [`Engine::count_rcpts`].
#[derive(Default)]
struct Counted {
    accepted: u64,
    deferred: u64,
    trips: Vec<Trip>,
}

/// What [`Engine::release`] cleared.
#[derive(Debug, Clone)]
pub struct Released {
    /// The hold that was in force, if one was.
    pub hold: Option<Hold>,
    /// Whether a recipient count or a throttle was reset.
    pub cleared_recipient_count: bool,
}

/// How many live login attempts an account remembers for matching their log lines.
const LIVE_ATTEMPTS_KEPT: usize = 16;

impl Engine {
    /// Builds the engine and the receiving end of its alert queue.
    pub fn new(config: &Config, now: Timestamp) -> (Engine, mpsc::Receiver<Arc<Alert>>) {
        let (tx, rx) = mpsc::channel(config.alert_queue_capacity);
        let engine = Engine {
            rules: RwLock::new(Arc::new(config.rules.clone())),
            baseline_config: RwLock::new(Arc::new(config.baselines.clone())),
            enrichment: RwLock::new(Arc::new(Enrichment::default())),
            case_sensitive: config.case_sensitive_accounts,
            state: State::default(),
            alerts: tx,
            recent: Mutex::new(VecDeque::new()),
            recent_cap: config.recent_alerts,
            stats: Stats::default(),
            started: now,
            messages: dashmap::DashMap::new(),
            sessions: dashmap::DashMap::new(),
            audit: OnceLock::new(),
            responses: RwLock::new(Arc::new(config.raw.responses.clone())),
            actions: OnceLock::new(),
            observing: std::sync::atomic::AtomicBool::new(false),
            observed: dashmap::DashMap::new(),
            ctl: context::ctl_prefix(&config.admin_socket.path).into(),
            journal: OnceLock::new(),
            storage: storage::Episodes::default(),
        };
        engine.note_observing();
        (engine, rx)
    }

    /// The one gate ([`gate::decide`]) with observe mode applied: a refusal by a rule
    /// that only observes (or by any rule under `[responses] mode = "observe"`) is not
    /// made.
    fn gate(
        &self,
        ask: gate::Ask,
        standing: &gate::Standing<'_>,
        now: Secs,
    ) -> Option<gate::Refused> {
        // Nothing observes (the usual case): one load, no lock.
        if !self.observing.load(std::sync::atomic::Ordering::Relaxed) {
            return gate::decide(ask, standing, now);
        }
        let rules = self.rules();
        let standing = gate::Standing {
            observing: gate::Observing {
                all: self.responses().mode == crate::rules::Mode::Observe,
                rules: Some(&rules),
            },
            ..*standing
        };
        gate::decide(ask, &standing, now)
    }

    /// `[responses]` in force.
    pub fn responses(&self) -> Arc<ResponsesConfig> {
        self.responses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces `[responses]` (on reload).
    pub fn set_responses(&self, responses: ResponsesConfig) {
        *self.responses.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(responses);
        self.note_observing();
    }

    /// Sets [`Engine::observing`] from the rules and `[responses]` in force.
    fn note_observing(&self) {
        let rules = self.rules();
        let any = self.responses().mode == crate::rules::Mode::Observe
            || RulesConfig::NAMES
                .iter()
                .any(|n| rules.mode_of(n) == crate::rules::Mode::Observe);
        self.observing
            .store(any, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hands blocks and unblocks to the external actions from now on, and every block
    /// in force now (restored from the snapshot: the far side may have lost them).
    pub fn set_actions(&self, actions: Actions, now: Timestamp) {
        if actions.is_empty() || self.actions.set(actions).is_err() {
            return;
        }
        for (net, b) in self.state.blocks().active(now.as_second()) {
            self.send_action(Step::Block {
                net,
                until: b.hold.until,
                by: b.by.to_string(),
                reason: b.reason.as_deref().unwrap_or(&b.hold.message).to_string(),
            });
        }
    }

    /// Hands a step to the external actions, if any run; never waits.
    pub(crate) fn send_action(&self, step: Step) {
        if let Some(a) = self.actions.get() {
            a.send(step);
        }
    }

    /// The external actions' counters.
    pub fn action_counters(&self) -> Vec<Arc<crate::actions::ActionCounters>> {
        self.actions
            .get()
            .map(Actions::counters)
            .unwrap_or_default()
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RulesConfig> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the rules (on reload); state is kept.
    pub fn set_rules(&self, rules: RulesConfig) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        self.note_observing();
    }

    /// How baselines learn.
    pub fn baseline_config(&self) -> Arc<BaselineConfig> {
        self.baseline_config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the baseline settings (on reload).
    pub fn set_baseline_config(&self, config: BaselineConfig) {
        *self
            .baseline_config
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// The enrichment in use.
    pub fn enrichment(&self) -> Arc<Enrichment> {
        self.enrichment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the enrichment (at start, and on reload when files changed).
    pub fn set_enrichment(&self, enrichment: Enrichment) {
        *self.enrichment.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(enrichment);
    }

    /// Opens the audit trail of `config` and sends what happens from now on to it;
    /// returns its writer, to close last (`None` when the trail is off). `backfill`
    /// marks the records as coming from `ingest`. Once per engine: later trails are
    /// closed again and ignored.
    pub fn open_audit(
        &self,
        config: &audit::AuditConfig,
        state_dir: &std::path::Path,
        backfill: bool,
    ) -> Result<Option<audit::AuditWriter>, audit::writer::OpenError> {
        Ok(
            audit::start(config, state_dir, backfill)?.map(|(sink, writer)| {
                let _ = self.audit.set(sink);
                writer
            }),
        )
    }

    /// The audit trail's writer, when it is on.
    pub fn audit(&self) -> Option<&AuditSink> {
        self.audit.get()
    }

    /// From now on, every change to the state is appended to `journal` (once: after the
    /// snapshot and the journal were read back).
    pub fn set_journal(&self, journal: Arc<crate::persist::journal::JournalFile>) {
        if self.journal.set(journal.clone()).is_ok() {
            self.state.set_journal(journal);
        }
    }

    /// The state journal, when it is on.
    pub fn journal(&self) -> Option<&Arc<crate::persist::journal::JournalFile>> {
        self.journal.get()
    }

    /// Records `record()` in the audit trail, when it is on.
    pub(crate) fn audit_record(&self, record: impl FnOnce() -> audit::Record) {
        if let Some(sink) = self.audit.get() {
            sink.record(record());
        }
    }

    /// The live state, for the admin socket and the sweeper.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// When the engine started.
    pub fn started(&self) -> Timestamp {
        self.started
    }

    /// The name under which an account is tracked.
    pub fn account_key<'a>(&self, user: &'a str) -> Cow<'a, str> {
        if self.case_sensitive || !user.chars().any(char::is_uppercase) {
            Cow::Borrowed(user)
        } else {
            Cow::Owned(user.to_lowercase())
        }
    }

    /// Decides on one request at `now`.
    pub fn handle(&self, cmd: &Command, now: Timestamp) -> Reply {
        let started = std::time::Instant::now();
        self.stats.request(cmd.verb());
        let secs = now.as_second();
        let reply = match cmd {
            Command::Ping => Reply::Pong,
            Command::Auth(a) => self.attempt(
                &Attempt {
                    user: &a.user,
                    ip: a.ip,
                    result: a.result,
                    pwhash: a.pwhash,
                    protocol: "smtp",
                    session: None,
                    origin: Origin::Live,
                    client: a.helo.as_deref(),
                    disabled: a.disabled,
                    line: None,
                    via: Via {
                        mech: a.mech.as_deref(),
                        authenticator: a.authenticator.as_deref(),
                        port: a.port.and_then(|p| u16::try_from(p).ok()),
                        local_port: a.local_port,
                        ..Via::default()
                    }
                    .with_tls_text(a.tls.as_deref()),
                },
                now,
            ),
            Command::Login(l) => self.attempt(
                &Attempt {
                    user: &l.user,
                    ip: l.ip,
                    result: l.result,
                    pwhash: l.pwhash,
                    protocol: &l.protocol,
                    session: l.session.as_deref(),
                    origin: Origin::Live,
                    client: l.client.as_deref(),
                    disabled: l.disabled,
                    line: None,
                    via: Via {
                        mech: l.mech.as_deref(),
                        port: l.port,
                        local_port: l.local_port,
                        ..Via::default()
                    }
                    .with_tls_text(l.tls.as_deref()),
                },
                now,
            ),
            Command::Mail(m) => self.submission(&m.user, m.ip, secs, |acct| {
                acct.totals.messages += 1;
            }),
            Command::Rcpt(r) => self.rcpt(&r.user, r.ip, now),
            Command::Data(d) => {
                let reply = self.submission(&d.user, d.ip, secs, |acct| {
                    acct.timeline.push(Entry::Sent {
                        time: secs,
                        msgid: d.msgid.as_deref().map(Arc::from),
                        rcpts: d.rcpts.unwrap_or(0),
                        ip: d.ip,
                        origin: Origin::Live,
                    });
                });
                self.audit_record(|| {
                    let mut r = audit::Record::new(audit::Kind::Sent, audit::Source::Live, now)
                        .user(&self.account_key(&d.user))
                        .ip(d.ip)
                        .protocol(Some("smtp"));
                    r.msgid = d.msgid.as_deref().map(Into::into);
                    r.rcpts = d.rcpts;
                    audit_verdict(&mut r, &reply);
                    r
                });
                reply
            }
            Command::Connect(c) => self.connect(c.ip, now),
        };
        self.stats.reply(&reply);
        self.stats.verdict(cmd.verb(), &reply, started.elapsed());
        reply
    }

    /// MAIL and DATA of an account: refused by what is in force ([`gate`]), else
    /// `accepted` runs.
    fn submission(
        &self,
        user: &str,
        ip: Option<IpAddr>,
        secs: Secs,
        accepted: impl FnOnce(&mut Account),
    ) -> Reply {
        let key = self.account_key(user);
        let disabled = self.disabled_refusal(&self.rules(), &key, secs);
        let mut acct = self.state.account_mut(&key);
        acct.last_seen = secs;
        acct.live_submission_at = Some(secs);
        let standing = gate::Standing {
            disabled: disabled.as_ref(),
            account: Some(&acct),
            source: ip,
            ..Default::default()
        };
        match self.gate(gate::Ask::Submit, &standing, secs) {
            None => {
                accepted(&mut acct);
                Reply::Accept
            }
            Some(refused) => {
                acct.totals.refused += 1;
                refused_reply(&refused)
            }
        }
    }

    /// The refusal for an account the accounts file lists as disabled (its attempts raise
    /// the alert; MAIL and RCPT after an accepted AUTH are refused quietly).
    fn disabled_refusal(
        &self,
        rules: &RulesConfig,
        key: &str,
        secs: Secs,
    ) -> Option<gate::Refused> {
        let rule = &rules.disabled_credentials;
        if !rule.enabled {
            return None;
        }
        self.enrichment().disabled.check(key, secs)?;
        crate::rules::disabled_credentials::refusal(
            DisabledCredentials::NAME,
            rule.response,
            &rule.message,
        )
    }

    /// The refusal for a listed address, when the list's rule refuses, or one a CrowdSec
    /// decision bans (no alert: for Dovecot's `allow`, which only asks).
    fn listed_refusal(
        &self,
        rules: &RulesConfig,
        enrich: &Enrichment,
        ip: IpAddr,
        secs: Secs,
    ) -> Option<gate::Refused> {
        let rule = &rules.bad_ip;
        if !rule.enabled || enrich.lists.blocked(ip).is_none() {
            return crowdsec_refusal(enrich, ip, secs);
        }
        crate::rules::disabled_credentials::refusal(BadIp::NAME, rule.response, &rule.message)
            .or_else(|| crowdsec_refusal(enrich, ip, secs))
    }

    /// A listed address's refusal and the alert its rule raises (at most once per
    /// `realert_secs`).
    fn listing(
        &self,
        rules: &RulesConfig,
        enrich: &Enrichment,
        ip: IpAddr,
        what: impl FnOnce() -> String,
        secs: Secs,
    ) -> (Option<gate::Refused>, Option<Trip>) {
        let Some(hit) = enrich.lists.blocked(ip) else {
            return (crowdsec_refusal(enrich, ip, secs), None);
        };
        let mut rec = self.state.ip_mut(ip);
        rec.last_seen = rec.last_seen.max(secs);
        let (refusal, trip) = rules
            .bad_ip
            .check(&hit, &mut rec.rules.bad_ip, ip, &what(), secs);
        drop(rec);
        (refusal.or_else(|| crowdsec_refusal(enrich, ip, secs)), trip)
    }

    /// The authentication block covering `ip` in force at `secs`, if any.
    fn ip_block(&self, ip: Option<IpAddr>, secs: Secs) -> Option<Hold> {
        self.state.blocks().covering(ip?, secs).map(|(_, b)| b.hold)
    }

    /// An unauthenticated connection from `ip`: refused while the address is blocked
    /// (`block_ip`) or on a block list (rule `bad_ip`), unless it is allow-listed.
    fn connect(&self, ip: Option<IpAddr>, now: Timestamp) -> Reply {
        let Some(ip) = ip else {
            return Reply::Accept;
        };
        let secs = now.as_second();
        let enrich = self.enrichment();
        if enrich.lists.allowed(ip) {
            return Reply::Accept;
        }
        let rules = self.rules();
        let (listed, trip) = self.listing(&rules, &enrich, ip, || "connection".into(), secs);
        let block = self.ip_block(Some(ip), secs);
        let standing = gate::Standing {
            listed: listed.as_ref(),
            ip_block: block.as_ref(),
            ..Default::default()
        };
        let reply = self
            .gate(gate::Ask::Connect, &standing, secs)
            .map_or(Reply::Accept, |r| refused_reply(&r));
        self.respond(
            trip.as_slice(),
            &respond::Subject {
                user: None,
                ip: Some(ip),
                protocol: Some("smtp"),
                rdns: None,
            },
            now,
        );
        reply
    }

    pub(crate) fn attempt(&self, at: &Attempt<'_>, now: Timestamp) -> Reply {
        let secs = now.as_second();
        let user = self.account_key(at.user);
        let rules = self.rules();
        let enrich = self.enrichment();
        // An allow-listed address (an office NAT, the webmail host) is exempt from the
        // address rules, and says nothing about where the user is.
        let allowed = at.ip.is_some_and(|ip| enrich.lists.allowed(ip));
        let disabled = if at.disabled {
            Some(Disabled::Flagged)
        } else {
            enrich.disabled.check(&user, secs)
        };
        let geo = match at.ip {
            Some(ip) if at.result == Outcome::Ok && !allowed => enrich.geoip.lookup(ip),
            _ => GeoInfo::default(),
        };
        let detail = at.detail();
        let mut trips: Vec<Trip> = Vec::new();
        let mut already_counted = false;
        // A failure as the rules see it; `in_force` is filled in for each subject, and
        // the address's keys (two hashes) only where an address counts it.
        let failure = Failure {
            user: &user,
            ip: at.ip,
            pwhash: at.pwhash,
            pair: None,
            account_hash: 0,
            in_force: None,
            now: secs,
        };
        // What is in force for the address, read before anything is counted.
        let source = at.ip.filter(|_| !allowed);
        let ip_block = self.ip_block(source, secs);
        let listed = match source {
            Some(ip) => {
                let what = || format!("{} login to {user}", at.protocol);
                let (refusal, trip) = self.listing(&rules, &enrich, ip, what, secs);
                trips.extend(trip);
                refusal
            }
            None => None,
        };
        // A source refused already (blocked, or listed where the list refuses) grows no
        // state per name it tries: an account it names is tracked only if it was
        // already. Its attempts still count against the address (a bounded record)
        // and are all audited.
        let track_account =
            (ip_block.is_none() && listed.is_none()) || self.state.account(&user).is_some();
        let standing = gate::Standing {
            listed: listed.as_ref(),
            ip_block: ip_block.as_ref(),
            source,
            ..Default::default()
        };
        let reply = if !track_account {
            self.gate(gate::Ask::Login, &standing, secs)
                .map_or(Reply::Accept, |r| refused_reply(&r))
        } else {
            let mut acct = self.state.account_mut(&user);
            acct.last_seen = secs;
            let mut refusal = None;
            if let Some(why) = disabled {
                let (r, trip) = rules.disabled_credentials.check(
                    why,
                    &mut acct.rules.disabled_credentials,
                    &user,
                    at.protocol,
                    secs,
                );
                refusal = r;
                trips.extend(trip);
            }
            let reply = self
                .gate(
                    gate::Ask::Login,
                    &gate::Standing {
                        disabled: refusal.as_ref(),
                        account: Some(&acct),
                        ..standing
                    },
                    secs,
                )
                .map_or(Reply::Accept, |r| refused_reply(&r));
            // The log line of a live attempt can arrive first (Dovecot logs a wrong
            // password before it reports it to the policy endpoint): a live attempt
            // that matches an attempt already counted from the log is the same one.
            let window = match at.result {
                Outcome::Ok => observe::MATCH_OK_SECS,
                Outcome::Fail => observe::MATCH_FAIL_SECS,
            };
            let counted_from_log = at.origin == Origin::Live
                && match acct.log_attempts.iter().position(|&(t, ip, r)| {
                    r == at.result && ip == at.ip && (t - secs).abs() <= window
                }) {
                    Some(i) => {
                        acct.log_attempts.remove(i);
                        true
                    }
                    None => false,
                };
            if counted_from_log {
                // The log line's entry gains what the request knows and the line did not.
                if !detail.is_empty() {
                    acct.timeline
                        .complete_login(secs, at.ip, at.result, window, &detail);
                }
                drop(acct);
                already_counted = true;
                reply
            } else {
                let protocol = crate::state::timeline::protocol_arc(at.protocol);
                acct.timeline.push(Entry::Login {
                    time: secs,
                    protocol: protocol.clone(),
                    ip: at.ip,
                    result: at.result,
                    session: at.session.map(Arc::from),
                    logout: None,
                    bytes_in: None,
                    bytes_out: None,
                    origin: at.origin,
                    detail: detail.clone().boxed(),
                });
                let kept = match at.origin {
                    Origin::Live => &mut acct.live_attempts,
                    Origin::Log => &mut acct.log_attempts,
                };
                if kept.len() >= LIVE_ATTEMPTS_KEPT {
                    kept.pop_front();
                }
                kept.push_back((secs, at.ip, at.result));
                match at.result {
                    Outcome::Ok => {
                        acct.totals.logins_ok += 1;
                        acct.last_login = Some((secs, at.ip, protocol));
                        if !allowed {
                            // A login refused (a hold, a block) did not happen: its
                            // network does not become familiar to the account.
                            let got_in = at.origin == Origin::Log || reply == Reply::Accept;
                            let slots = &mut acct.rules;
                            self.learn_login(
                                &user, at, &geo, secs, &rules, got_in, slots, &mut trips,
                            );
                        }
                    }
                    Outcome::Fail => {
                        acct.totals.logins_failed += 1;
                        // The failure windows are in the snapshot: a restart keeps them.
                        self.state.mark_dirty();
                        let failure = Failure {
                            in_force: acct.active_hold(secs).map(|h| h.rule),
                            ..failure
                        };
                        rules.account_failure(&failure, &mut acct.rules, &mut trips);
                        self.state.journal_account(&user, &mut acct, false);
                    }
                }
                reply
            }
        };
        if let Some(ip) = source
            && at.result == Outcome::Fail
            && !already_counted
        {
            let in_force = self
                .state
                .blocks()
                .covering(ip, secs)
                .map(|(_, b)| b.hold.rule);
            let mut rec = self.state.ip_mut(ip);
            rec.last_seen = secs;
            let failure = Failure {
                in_force,
                pair: at.pwhash.map(|h| {
                    let mut hasher = DefaultHasher::new();
                    (&*user, h).hash(&mut hasher);
                    hasher.finish()
                }),
                account_hash: {
                    let mut hasher = DefaultHasher::new();
                    (*user).hash(&mut hasher);
                    hasher.finish()
                },
                ..failure
            };
            rules.address_failure(&failure, &mut rec.rules, &mut trips);
            self.state.journal_ip(ip, &mut rec);
        }
        // A log event is a record of what already happened: nobody refused it.
        if reply != Reply::Accept
            && at.origin == Origin::Live
            && let Some(mut acct) = self.state.tracked_account_mut(&user)
        {
            acct.totals.refused += 1;
        }
        let protocol = (at.protocol != UNKNOWN_PROTOCOL).then_some(at.protocol);
        if !already_counted {
            self.audit_record(|| {
                let source = match at.origin {
                    Origin::Live => audit::Source::Live,
                    Origin::Log => audit::Source::Log,
                };
                let mut r = audit::Record::new(audit::Kind::Auth, source, now)
                    .user(&user)
                    .ip(at.ip)
                    .protocol(protocol);
                r.result = Some(at.result);
                r.session = at.session.map(Into::into);
                r.set_login_detail(&detail);
                if let Some((file, offset)) = at.line {
                    r.file = Some(file.to_string());
                    r.offset = Some(offset);
                }
                // A log line is a record of what happened: the oracle gave no verdict.
                if at.origin == Origin::Live {
                    audit_verdict(&mut r, &reply);
                }
                r
            });
        }
        // The address's name, for alerts: from the cache only (a miss asks the
        // background resolver, for next time); never waited for.
        let rdns = match at.ip {
            Some(ip) if at.origin == Origin::Live && enrich.rdns.enabled() => {
                enrich.rdns.cached_or_request(ip, now)
            }
            _ => None,
        };
        self.respond(
            &trips,
            &respond::Subject {
                user: Some(&user),
                ip: at.ip,
                protocol,
                rdns: rdns.as_deref(),
            },
            now,
        );
        reply
    }

    /// A successful login: the login rules look at it, then the baseline learns it, and,
    /// when it `got_in`, its network is familiar to the account.
    #[allow(clippy::too_many_arguments)]
    fn learn_login(
        &self,
        user: &str,
        at: &Attempt<'_>,
        geo: &GeoInfo,
        secs: Secs,
        rules: &RulesConfig,
        got_in: bool,
        slots: &mut AccountSlots,
        trips: &mut Vec<Trip>,
    ) {
        let config = self.baseline_config();
        let mut b = self.state.baseline_mut(user, secs);
        if let Some(ip) = at.ip {
            let login = LoginOk {
                user,
                ip,
                geo,
                baseline: &b,
                config: &config,
                now: secs,
            };
            rules.login_ok(&login, slots, trips);
        }
        b.learn_login(secs, at.ip, geo, at.client);
        drop(b);
        if let Some(ip) = at.ip.filter(|_| got_in) {
            let net = rules.failed_logins_account.familiar_network(ip);
            self.state.learn_familiar(user, net, secs);
        }
    }

    fn rcpt(&self, user: &str, ip: Option<IpAddr>, now: Timestamp) -> Reply {
        let secs = now.as_second();
        let user = self.account_key(user);
        let rules = self.rules();
        let disabled = self.disabled_refusal(&rules, &user, secs);
        let ceiling = &rules.recipient_ceiling;
        let (reply, trips) = {
            let mut acct = self.state.account_mut(&user);
            acct.last_seen = secs;
            acct.live_submission_at = Some(secs);
            let standing = gate::Standing {
                disabled: disabled.as_ref(),
                account: Some(&acct),
                ceiling: ceiling.enabled.then_some(gate::Ceiling {
                    limit: ceiling.limit,
                    window_secs: ceiling.window_secs as Secs,
                    message: &ceiling.message,
                    rule: RecipientCeiling::NAME,
                }),
                source: ip,
                ..Default::default()
            };
            if let Some(refused) = self.gate(gate::Ask::Rcpt, &standing, secs) {
                acct.totals.rcpts_refused += 1;
                acct.totals.refused += 1;
                return refused_reply(&refused);
            }
            let counted = self.count_rcpts(&mut acct, &user, 1, secs, &rules);
            if counted.deferred > 0 {
                acct.totals.refused += 1;
                (
                    Reply::Defer(rules.recipient_ceiling.message.clone()),
                    counted.trips,
                )
            } else {
                (Reply::Accept, counted.trips)
            }
        };
        self.respond(
            &trips,
            &respond::Subject {
                user: Some(&user),
                ip,
                protocol: Some("smtp"),
                rdns: None,
            },
            now,
        );
        reply
    }

    /// Counts `n` recipients of an account: each one the ceiling still admits is
    /// accepted, the rest deferred; then the recipient rules look at the accepted ones.
    /// The baseline is touched once an hour per account (its rate is copied into the
    /// live entry), not per recipient. The caller applies and raises the trips after
    /// releasing the account.
    fn count_rcpts(
        &self,
        acct: &mut Account,
        user: &str,
        n: u64,
        secs: Secs,
        rules: &RulesConfig,
    ) -> Counted {
        let mut counted = Counted::default();
        acct.rcpts
            .prune(secs, rules.recipient_window_secs() as Secs);
        // A ceiling that only observes admits every recipient (and alerts).
        let observed = self.responses().mode == crate::rules::Mode::Observe
            || rules.mode_of(RecipientCeiling::NAME) == crate::rules::Mode::Observe;
        for _ in 0..n {
            if observed || rules.recipient_ceiling.admits(&acct.rcpts, secs).is_ok() {
                acct.rcpts.record(secs);
                acct.totals.rcpts_accepted += 1;
                counted.accepted += 1;
            } else {
                acct.totals.rcpts_refused += 1;
                counted.deferred += 1;
            }
        }
        if counted.accepted > 0 {
            let accepted = counted.accepted.min(u64::from(u32::MAX)) as u32;
            self.state.journal_rcpts(user, acct, secs, accepted);
            let config = self.baseline_config();
            if !acct.send.is_current(secs) {
                let mut b = self.state.baseline_mut(user, secs);
                acct.send.refresh(&mut b, secs);
            }
            acct.send.count(accepted, secs);
            let sent = Recipients {
                user,
                accepted: counted.accepted,
                rcpts: &acct.rcpts,
                send: &acct.send,
                config: &config,
                now: secs,
            };
            rules.recipients(&sent, &mut acct.rules, &mut counted.trips);
        }
        counted
    }

    /// The most recent alerts, newest last.
    pub fn recent_alerts(&self, limit: usize) -> Vec<Arc<Alert>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .skip(recent.len().saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// An account's baseline, with the recipients its live entry counted since the last
    /// hour handed to it first (so the sending rate is current), as `ctl account
    /// --baseline` shows it. `None` when the account has none yet.
    pub fn baseline_of(
        &self,
        user: &str,
    ) -> Option<
        dashmap::mapref::one::Ref<'_, crate::state::Key, Box<crate::state::baseline::Baseline>>,
    > {
        let key = self.account_key(user);
        self.state.flush_send_of(&key);
        self.state.baseline(&key)
    }

    /// Releases an account: ends its hold and forgets its failures and recipient count,
    /// so it does not trip again on old events. Returns what was cleared, `None` when the
    /// account is not tracked. `by` names the administrator, for the audit trail.
    pub fn release(&self, user: &str, now: Timestamp, by: &str) -> Option<Released> {
        let key = self.account_key(user);
        let mut acct = self.state.tracked_account_mut(&key)?;
        self.state.mark_dirty();
        let hold = acct.hold.take().filter(|h| h.active(now.as_second()));
        acct.hold_info = None;
        acct.rules.failed_logins_account.failures.clear();
        let throttled = !acct.rcpts.is_empty() || acct.throttle.is_some();
        acct.rcpts.clear();
        acct.throttle = None;
        self.state.journal_account(&key, &mut acct, true);
        drop(acct);
        self.audit_record(|| {
            let mut r =
                audit::Record::new(audit::Kind::Release, audit::Source::Admin, now).user(&key);
            r.admin = Some(by.into());
            r.reason = Some(match &hold {
                Some(h) => format!("hold by {} ended early; counters reset", h.rule),
                None => "no hold in force; counters reset".into(),
            });
            r.until = hold
                .as_ref()
                .and_then(|h| Timestamp::from_second(h.until).ok());
            r
        });
        Some(Released {
            hold,
            cleared_recipient_count: throttled,
        })
    }

    /// Holds `user` from `now` for `secs` seconds on every source, as an administrator
    /// (`ctl hold`): replaces a hold in force. Returns the account's key and the hold.
    pub fn hold(
        &self,
        user: &str,
        secs: u64,
        reason: Option<&str>,
        now: Timestamp,
        by: &str,
    ) -> (String, Hold) {
        let key = self.account_key(user);
        let t = now.as_second();
        let hold = Hold {
            since: t,
            until: t.saturating_add(secs as Secs),
            rule: "admin",
            message: Arc::from(ADMIN_HOLD_MESSAGE),
            deny: false,
        };
        {
            let mut acct = self.state.account_mut(&key);
            acct.last_seen = acct.last_seen.max(t);
            acct.hold = Some(hold.clone());
            acct.hold_info = Some(Box::new(crate::state::HoldInfo {
                by: Arc::from(by),
                reason: reason.map(Arc::from),
                scope: crate::state::HoldScope::All,
                familiar: Vec::new(),
            }));
            self.state.journal_account(&key, &mut acct, false);
        }
        self.state.mark_dirty();
        self.audit_record(|| {
            let mut r =
                audit::Record::new(audit::Kind::Admin, audit::Source::Admin, now).user(&key);
            r.action = Some("hold".into());
            r.admin = Some(by.into());
            r.reason = reason.map(str::to_string);
            r.until = Timestamp::from_second(hold.until).ok();
            r
        });
        (key.to_string(), hold)
    }

    /// Blocks `net` from `now` for `secs` seconds, as an administrator (`ctl block`); a
    /// single IPv6 address covers its network (`[responses] block_prefix_v6`). The
    /// external actions are told. Returns the block in force.
    pub fn block(
        &self,
        net: IpNet,
        secs: u64,
        reason: Option<&str>,
        now: Timestamp,
        by: &str,
    ) -> (IpNet, Block) {
        let t = now.as_second();
        let sizing = self.responses().sizing();
        let net = if net.prefix_len() == net.max_prefix_len() {
            sizing.network_of(net.addr())
        } else {
            net.trunc()
        };
        let hold = Hold {
            since: t,
            until: t.saturating_add(secs as Secs),
            rule: "admin",
            message: Arc::from(ADMIN_BLOCK_MESSAGE),
            deny: true,
        };
        let block = self.state.blocks().put(
            net,
            hold,
            Arc::from(by),
            reason.map(Arc::from),
            false,
            &sizing,
            t,
        );
        self.state.mark_dirty();
        self.send_action(Step::Block {
            net,
            until: block.hold.until,
            by: by.to_string(),
            reason: reason.unwrap_or(ADMIN_BLOCK_MESSAGE).to_string(),
        });
        let single = (net.prefix_len() == net.max_prefix_len()).then(|| net.addr());
        self.audit_record(|| {
            let mut r =
                audit::Record::new(audit::Kind::Admin, audit::Source::Admin, now).ip(single);
            r.action = Some("block".into());
            r.admin = Some(by.into());
            r.reason = Some(match reason {
                Some(why) => format!("{net}: {why}"),
                None => net.to_string(),
            });
            r.until = Timestamp::from_second(block.hold.until).ok();
            r
        });
        (net, block)
    }

    /// Lifts the blocks on `net` and inside it (for one address, also the network
    /// block covering it), tells the external actions, and, for one address, forgets the
    /// failures and sprayed accounts counted against it (the next failure does not block
    /// it again at once); `by` names the administrator.
    /// Returns the blocks lifted (empty: none was in force).
    pub fn unblock(&self, net: IpNet, now: Timestamp, by: &str) -> Vec<(IpNet, Block)> {
        let secs = now.as_second();
        let lifted = self.state.blocks().lift(net, secs);
        self.state.mark_dirty();
        if net.prefix_len() == net.max_prefix_len()
            && let Some(mut rec) = self.state.tracked_ip_mut(net.addr())
        {
            rec.rules.failed_logins_ip.failures.clear();
            rec.rules.password_spraying.accounts.clear();
            self.state.journal_ip(net.addr(), &mut rec);
        }
        for (n, _) in &lifted {
            self.send_action(Step::Unblock { net: *n });
        }
        let single = (net.prefix_len() == net.max_prefix_len()).then(|| net.addr());
        self.audit_record(|| {
            let mut r =
                audit::Record::new(audit::Kind::Unblock, audit::Source::Admin, now).ip(single);
            r.admin = Some(by.into());
            r.reason = Some(if lifted.is_empty() {
                format!("no block in force on {net}; counters reset")
            } else {
                let what: Vec<String> = lifted
                    .iter()
                    .map(|(n, b)| format!("{n} (by {})", b.by))
                    .collect();
                format!("blocks lifted early: {}; counters reset", what.join(", "))
            });
            r.until = lifted
                .iter()
                .map(|(_, b)| b.hold.until)
                .max()
                .and_then(|u| Timestamp::from_second(u).ok());
            r
        });
        lifted
    }

    /// Forgets idle entries; run periodically.
    pub fn sweep(&self, now: Timestamp, idle_secs: u64, max_accounts: usize) -> usize {
        let secs = now.as_second();
        self.messages
            .retain(|_, (_, seen)| *seen > secs - idle_secs as Secs);
        self.sessions
            .retain(|_, (_, seen)| *seen > secs - observe::MATCH_OK_SECS);
        self.observed.retain(|_, until| *until > secs);
        let ended = self.state.blocks().sweep(secs, &self.responses().sizing());
        let familiar_days = self.rules().failed_logins_account.familiar_days;
        self.state
            .sweep_familiar(secs.saturating_sub(familiar_days.saturating_mul(86_400) as Secs));
        ended.len() + self.state.sweep(secs, idle_secs as Secs, max_accounts)
    }
}

/// What a client sees while an administrator holds its account (`ctl hold`).
pub const ADMIN_HOLD_MESSAGE: &str =
    "This account is on hold by the mail administrators; please contact them";

/// What a client sees while an administrator blocks its address (`ctl block`).
pub const ADMIN_BLOCK_MESSAGE: &str =
    "Your address is blocked by the mail administrators; please contact them";

/// Puts a live verdict on an audit record.
fn audit_verdict(r: &mut audit::Record, reply: &Reply) {
    let (verdict, text) = match reply {
        Reply::Accept => ("accept", None),
        Reply::Defer(t) => ("defer", Some(t)),
        Reply::Deny(t) => ("deny", Some(t)),
        Reply::Error(t) => ("error", Some(t)),
        Reply::Pong => return,
    };
    r.verdict = Some(verdict.into());
    r.reason = text.cloned();
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "tests/responses.rs"]
mod responses_tests;

#[cfg(test)]
#[path = "tests/journal.rs"]
mod journal_tests;
