//! The report's numbers and lists, gathered in one pass over the trail's records
//! (`audit::search` hands them over one at a time, oldest written first). Memory is
//! bounded whatever the trail holds: counts are kept per day, protocol, country and AS
//! (each capped), the top failing addresses and accounts with a Misra-Gries summary
//! of [`TOP_CAPACITY`] entries, and every list (holds and blocks, admin actions, an
//! account's accesses) keeps its first [`LIST_CAP`] rows and counts the rest.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use jiff::Timestamp;
use serde::Serialize;

use super::pseudo::Shown;
use crate::audit::record::{Kind, Record};
use crate::enrich::GeoIp;
use crate::protocol::Outcome;
use crate::rules::Response;

/// The most rows a list keeps; the rest are counted in its `omitted`.
pub const LIST_CAP: usize = 10_000;
/// How many entries the top-failing summaries keep while counting.
pub const TOP_CAPACITY: usize = 20_000;
/// How many rows a top list shows.
pub const TOP_SHOWN: usize = 20;
/// How the summary of an alert of a rule in observe mode begins.
const OBSERVED: &str = "[observed]";
/// The most distinct protocols or autonomous systems counted apart; the rest are
/// counted under `other`.
const KEYS_CAP: usize = 5_000;

/// Logins by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// The password was right and the login went ahead.
    pub ok: u64,
    /// The password was wrong or the account unknown.
    pub failed: u64,
    /// The oracle refused the login (deny or defer), whatever the password.
    pub refused: u64,
}

impl Outcomes {
    /// All logins.
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.refused
    }

    fn add(&mut self, o: LoginOutcome) {
        match o {
            LoginOutcome::Ok => self.ok += 1,
            LoginOutcome::Failed => self.failed += 1,
            LoginOutcome::Refused => self.refused += 1,
        }
    }
}

/// What became of one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginOutcome {
    /// Accepted.
    Ok,
    /// Wrong password or unknown account.
    Failed,
    /// Refused by the oracle.
    Refused,
}

impl LoginOutcome {
    /// The outcome as written.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Ok => "ok",
            LoginOutcome::Failed => "failed",
            LoginOutcome::Refused => "refused",
        }
    }

    /// The outcome of an `auth` record: a wrong password is `failed` whatever the
    /// verdict; a right one refused by the oracle (`deny`, `defer`) and a login refused
    /// before the password was checked are `refused`.
    pub fn of(r: &Record) -> LoginOutcome {
        let refused = matches!(r.verdict.as_deref(), Some("deny" | "defer"));
        match r.result {
            Some(Outcome::Fail) => LoginOutcome::Failed,
            Some(Outcome::Ok) if !refused => LoginOutcome::Ok,
            _ => LoginOutcome::Refused,
        }
    }
}

/// One row of counts by a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyedOutcomes {
    /// The protocol, day (`YYYY-MM-DD`) or country code (`unknown` when not known).
    pub key: String,
    /// The counts.
    #[serde(flatten)]
    pub logins: Outcomes,
}

/// Logins by autonomous system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsOutcomes {
    /// The AS number, absent when not known.
    pub asn: Option<u32>,
    /// The AS organisation as the database names it.
    pub org: Option<String>,
    /// The counts.
    #[serde(flatten)]
    pub logins: Outcomes,
}

/// The login counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Logins {
    /// All logins in the period.
    pub total: Outcomes,
    /// By protocol (`smtp`, `imap`, `pop3`, ...), by name.
    pub by_protocol: Vec<KeyedOutcomes>,
    /// By day (UTC), oldest first.
    pub by_day: Vec<KeyedOutcomes>,
    /// By country (ISO 3166 code, or `unknown`), most logins first.
    pub by_country: Vec<KeyedOutcomes>,
    /// By autonomous system, most logins first.
    pub by_as: Vec<AsOutcomes>,
}

/// A name and how often it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopRow {
    /// The address or account (as shown: pseudonymised or truncated when asked).
    pub name: String,
    /// Failed logins counted.
    pub failures: u64,
}

/// A top list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Top {
    /// The most failing first, at most [`TOP_SHOWN`].
    pub rows: Vec<TopRow>,
    /// Whether more distinct names failed than the summary keeps, so counts may be
    /// low by at most `error_bound`.
    pub approximate: bool,
    /// The most any count can be under the true count (0 when exact).
    pub error_bound: u64,
}

/// A name and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The rule or severity.
    pub key: String,
    /// How many.
    pub count: u64,
}

/// The alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Alerts {
    /// All alerts in the period.
    pub total: u64,
    /// Of those, alerts of rules in observe mode (`[observed]`): nothing was put in
    /// force, so they are not in `holds_and_blocks`.
    pub observed: u64,
    /// By rule, by name.
    pub by_rule: Vec<Count>,
    /// By severity, most severe first.
    pub by_severity: Vec<Count>,
}

/// A hold or block put in force, or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldRow {
    /// When.
    pub time: Timestamp,
    /// The record's kind: `alert` (a rule's response), `admin` (`ctl hold` /
    /// `ctl block`), `release`, `unblock` or `action` (a firewall, fail2ban or CrowdSec
    /// step).
    pub kind: &'static str,
    /// What: the response (`hold_account`, `block_ip`, ...) or the action (`hold`,
    /// `block`, ...).
    pub what: String,
    /// The account.
    pub account: Option<String>,
    /// The address.
    pub address: Option<String>,
    /// Who: the rule, or the administrator.
    pub by: Option<String>,
    /// Why (left out when pseudonymised or addresses are truncated: reasons quote
    /// accounts and addresses).
    pub reason: Option<String>,
    /// Until when it is in force (for `release`: until when it would have been).
    pub until: Option<Timestamp>,
    /// For how long, in seconds (`until` − `time`).
    pub for_secs: Option<i64>,
}

/// An administrator's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminRow {
    /// When.
    pub time: Timestamp,
    /// The record's kind (`admin`, `release`, `unblock`).
    pub kind: &'static str,
    /// What was done (`hold`, `block`, `master_login`, `removed`, ...).
    pub action: Option<String>,
    /// The administrator.
    pub admin: Option<String>,
    /// The account acted on.
    pub account: Option<String>,
    /// The address.
    pub address: Option<String>,
    /// The mailbox.
    pub mailbox: Option<String>,
    /// Exim's message id.
    pub msgid: Option<String>,
    /// Why (left out when pseudonymised or addresses are truncated).
    pub reason: Option<String>,
}

/// A list that keeps its first [`LIST_CAP`] rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct List<T> {
    /// The rows, in the trail's order.
    pub rows: Vec<T>,
    /// Rows not kept.
    pub omitted: u64,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            rows: Vec::new(),
            omitted: 0,
        }
    }
}

impl<T> List<T> {
    fn push(&mut self, row: T) {
        if self.rows.len() < LIST_CAP {
            self.rows.push(row);
        } else {
            self.omitted += 1;
        }
    }
}

/// Messages sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sending {
    /// Messages submitted by authenticated accounts.
    pub messages: u64,
    /// Their recipients.
    pub recipients: u64,
}

/// One access of the account (`--user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    /// When.
    pub time: Timestamp,
    /// The service.
    pub protocol: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    /// The address's reverse name, when the trail recorded one.
    pub reverse_name: Option<String>,
    /// Its country (ISO 3166 code, from the GeoIP database at report time).
    pub country: Option<String>,
    /// Its AS number.
    pub asn: Option<u32>,
    /// Its AS organisation.
    pub as_org: Option<String>,
    /// The client's name (HELO / EHLO, Dovecot's client id).
    pub client: Option<String>,
    /// Whether TLS was used.
    pub tls: Option<bool>,
    /// The SASL mechanism.
    pub mech: Option<String>,
    /// What became of it.
    pub outcome: LoginOutcome,
    /// The oracle's verdict (`accept`, `defer`, `deny`), for live requests.
    pub verdict: Option<String>,
}

/// A message the account sent (`--user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentRow {
    /// When.
    pub time: Timestamp,
    /// Exim's message id.
    pub msgid: Option<String>,
    /// How many recipients.
    pub recipients: Option<u64>,
    /// The client's address.
    pub address: Option<String>,
}

/// Something done to the account's mailboxes (`--user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxRow {
    /// When.
    pub time: Timestamp,
    /// The record's kind: `mailbox`, or `admin` for an administrator's action.
    pub kind: &'static str,
    /// What (`expunge`, `copy`, `master_login`, ...).
    pub action: Option<String>,
    /// The mailbox.
    pub mailbox: Option<String>,
    /// The source mailbox of a copy or rename.
    pub from_mailbox: Option<String>,
    /// The message's IMAP UID.
    pub uid: Option<u32>,
    /// Exim's message id.
    pub msgid: Option<String>,
    /// The administrator, for an administrator's action.
    pub admin: Option<String>,
}

/// An IMAP / POP3 session that ended (`--user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    /// When it ended.
    pub time: Timestamp,
    /// The service.
    pub protocol: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    /// Bytes from the client.
    pub bytes_in: Option<u64>,
    /// Bytes to the client.
    pub bytes_out: Option<u64>,
    /// Messages fetched.
    pub fetched: Option<u64>,
    /// Messages deleted.
    pub deleted: Option<u64>,
}

/// The per-account part (`--user`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    /// Every login attempt.
    pub logins: List<AccessRow>,
    /// Every message sent.
    pub sent: List<SentRow>,
    /// Every mailbox action.
    pub mailbox: List<MailboxRow>,
    /// Every session that ended.
    pub sessions: List<SessionRow>,
}

/// What the pass gathers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Gathered {
    /// Login counts.
    pub logins: Logins,
    /// The addresses with the most failed logins.
    pub top_failing_addresses: Top,
    /// The accounts with the most failed logins.
    pub top_failing_accounts: Top,
    /// Alert counts.
    pub alerts: Alerts,
    /// Holds and blocks put in force or ended.
    pub holds_and_blocks: List<HoldRow>,
    /// Administrators' actions.
    pub admin_actions: List<AdminRow>,
    /// Messages sent.
    pub sending: Sending,
    /// The account's accesses, with `--user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// Counts of the most frequent names in bounded memory (Misra-Gries): each count is
/// at most `error_bound` under the true one, and every name failing more often than
/// that is kept.
#[derive(Debug, Default)]
struct Heavy {
    counts: HashMap<String, u64>,
    /// How often every count was lowered by one (the error bound).
    lowered: u64,
}

impl Heavy {
    fn add(&mut self, name: String) {
        if let Some(c) = self.counts.get_mut(&name) {
            *c += 1;
            return;
        }
        if self.counts.len() < TOP_CAPACITY {
            self.counts.insert(name, 1);
            return;
        }
        // Full: lower every count (and the new name's 1) by one.
        self.lowered += 1;
        self.counts.retain(|_, c| {
            *c -= 1;
            *c > 0
        });
    }

    fn top(self) -> Top {
        let mut rows: Vec<TopRow> = self
            .counts
            .into_iter()
            .map(|(name, failures)| TopRow { name, failures })
            .collect();
        rows.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.name.cmp(&b.name)));
        rows.truncate(TOP_SHOWN);
        Top {
            rows,
            approximate: self.lowered > 0,
            error_bound: self.lowered,
        }
    }
}

/// Outcomes by a key, at most [`KEYS_CAP`] keys apart (the rest under `other`).
#[derive(Debug, Default)]
struct Keyed<K: Ord> {
    map: BTreeMap<K, Outcomes>,
    other: Outcomes,
}

impl<K: Ord> Keyed<K> {
    fn add(&mut self, key: K, o: LoginOutcome) {
        if let Some(v) = self.map.get_mut(&key) {
            v.add(o);
        } else if self.map.len() < KEYS_CAP {
            self.map.entry(key).or_default().add(o);
        } else {
            self.other.add(o);
        }
    }
}

/// The one pass.
pub struct Gatherer<'a> {
    shown: &'a Shown,
    geo: &'a GeoIp,
    total: Outcomes,
    by_protocol: Keyed<String>,
    by_day: BTreeMap<String, Outcomes>,
    by_country: BTreeMap<String, Outcomes>,
    by_as: Keyed<Option<u32>>,
    as_orgs: HashMap<u32, String>,
    failing_addresses: Heavy,
    failing_accounts: Heavy,
    alerts_total: u64,
    alerts_observed: u64,
    by_rule: BTreeMap<String, u64>,
    by_severity: BTreeMap<crate::rules::Severity, u64>,
    holds: List<HoldRow>,
    admin: List<AdminRow>,
    sending: Sending,
    access: Option<Access>,
}

impl<'a> Gatherer<'a> {
    /// A pass that shows names through `shown`, looks addresses up in `geo`, and
    /// lists every access when `per_account`.
    pub fn new(shown: &'a Shown, geo: &'a GeoIp, per_account: bool) -> Gatherer<'a> {
        Gatherer {
            shown,
            geo,
            total: Outcomes::default(),
            by_protocol: Keyed::default(),
            by_day: BTreeMap::new(),
            by_country: BTreeMap::new(),
            by_as: Keyed::default(),
            as_orgs: HashMap::new(),
            failing_addresses: Heavy::default(),
            failing_accounts: Heavy::default(),
            alerts_total: 0,
            alerts_observed: 0,
            by_rule: BTreeMap::new(),
            by_severity: BTreeMap::new(),
            holds: List::default(),
            admin: List::default(),
            sending: Sending::default(),
            access: per_account.then(Access::default),
        }
    }

    fn ip(&self, ip: Option<IpAddr>) -> Option<String> {
        ip.map(|ip| self.shown.address(ip))
    }

    fn account(&self, user: Option<&str>) -> Option<String> {
        user.map(|u| self.shown.account(u))
    }

    fn text(&self, t: Option<&str>) -> Option<String> {
        t.map(str::to_string)
    }

    /// Counts one record of the period.
    pub fn add(&mut self, r: &Record) {
        match r.kind {
            Kind::Auth => self.auth(r),
            Kind::Sent => {
                self.sending.messages += 1;
                self.sending.recipients += r.rcpts.unwrap_or(0);
                let row = SentRow {
                    time: r.time,
                    msgid: self.text(r.msgid.as_deref()),
                    recipients: r.rcpts,
                    address: self.ip(r.ip),
                };
                if let Some(a) = &mut self.access {
                    a.sent.push(row);
                }
            }
            Kind::Logout => {
                let row = SessionRow {
                    time: r.time,
                    protocol: self.text(r.protocol.as_deref()),
                    address: self.ip(r.ip),
                    bytes_in: r.bytes_in,
                    bytes_out: r.bytes_out,
                    fetched: r.fetched,
                    deleted: r.deleted,
                };
                if let Some(a) = &mut self.access {
                    a.sessions.push(row);
                }
            }
            Kind::Mailbox => {
                let row = self.mailbox_row(r, "mailbox");
                if let Some(a) = &mut self.access {
                    a.mailbox.push(row);
                }
            }
            Kind::Admin => {
                let row = self.admin_row(r);
                self.admin.push(row);
                if matches!(r.action.as_deref(), Some("hold" | "block")) {
                    let row = self.hold_row(r, r.admin.as_deref());
                    self.holds.push(row);
                }
                if self.access.is_some() && (r.mailbox.is_some() || r.user.is_some()) {
                    let row = self.mailbox_row(r, "admin");
                    if let Some(a) = &mut self.access {
                        a.mailbox.push(row);
                    }
                }
            }
            Kind::Release | Kind::Unblock => {
                let row = self.admin_row(r);
                self.admin.push(row);
                let row = self.hold_row(r, r.admin.as_deref());
                self.holds.push(row);
            }
            Kind::Action => {
                let row = self.hold_row(r, r.admin.as_deref());
                self.holds.push(row);
            }
            Kind::Alert => {
                self.alerts_total += 1;
                *self
                    .by_rule
                    .entry(r.rule.as_deref().unwrap_or("unknown").to_string())
                    .or_default() += 1;
                if let Some(s) = r.severity {
                    *self.by_severity.entry(s).or_default() += 1;
                }
                // A rule in observe mode writes what it would have done; its summary
                // says so, and nothing was put in force.
                let observed = r.reason.as_deref().is_some_and(|t| t.starts_with(OBSERVED));
                if observed {
                    self.alerts_observed += 1;
                } else if r.response.is_some_and(|resp| resp != Response::Alert) {
                    let row = self.hold_row(r, r.rule.as_deref());
                    self.holds.push(row);
                }
            }
            Kind::Segment | Kind::Retention | Kind::Recovered => {}
        }
    }

    fn auth(&mut self, r: &Record) {
        let outcome = LoginOutcome::of(r);
        self.total.add(outcome);
        let protocol = r.protocol.as_deref().unwrap_or("unknown").to_string();
        self.by_protocol.add(protocol, outcome);
        self.by_day
            .entry(r.time.strftime("%Y-%m-%d").to_string())
            .or_default()
            .add(outcome);
        let geo = r.ip.map(|ip| self.geo.lookup(ip)).unwrap_or_default();
        let country = geo
            .country
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| "unknown".into());
        self.by_country
            .entry(country.clone())
            .or_default()
            .add(outcome);
        self.by_as.add(geo.asn, outcome);
        if let (Some(asn), Some(org)) = (geo.asn, &geo.as_org)
            && !self.as_orgs.contains_key(&asn)
            && self.as_orgs.len() < KEYS_CAP
        {
            self.as_orgs.insert(asn, org.to_string());
        }
        if outcome == LoginOutcome::Failed {
            if let Some(ip) = r.ip {
                let shown = self.shown.address(ip);
                self.failing_addresses.add(shown);
            }
            if let Some(u) = r.user.as_deref() {
                let shown = self.shown.account(u);
                self.failing_accounts.add(shown);
            }
        }
        if self.access.is_some() {
            let row = AccessRow {
                time: r.time,
                protocol: self.text(r.protocol.as_deref()),
                address: self.ip(r.ip),
                reverse_name: None,
                country: geo.country.map(|c| c.as_str().to_string()),
                asn: geo.asn,
                as_org: geo.as_org.as_deref().map(str::to_string),
                client: r.client.as_deref().map(|c| self.shown.client(c)),
                tls: r.tls,
                mech: self.text(r.mech.as_deref()),
                outcome,
                verdict: self.text(r.verdict.as_deref()),
            };
            if let Some(a) = &mut self.access {
                a.logins.push(row);
            }
        }
    }

    fn reason(&self, r: &Record) -> Option<String> {
        r.reason.as_deref().and_then(|t| self.shown.reason(t))
    }

    fn hold_row(&self, r: &Record, by: Option<&str>) -> HoldRow {
        let what = match r.kind {
            Kind::Alert => r.response.map(|x| x.as_str().to_string()),
            _ => r.action.as_deref().map(str::to_string),
        }
        .unwrap_or_else(|| r.kind.as_str().to_string());
        let by = match r.kind {
            Kind::Alert => by.map(str::to_string),
            _ => by.map(|a| self.shown.admin(a)),
        };
        HoldRow {
            time: r.time,
            kind: r.kind.as_str(),
            what,
            account: self.account(r.user.as_deref()),
            address: self.ip(r.ip),
            by,
            reason: self.reason(r),
            until: r.until,
            for_secs: r.until.map(|u| u.as_second() - r.time.as_second()),
        }
    }

    fn admin_row(&self, r: &Record) -> AdminRow {
        AdminRow {
            time: r.time,
            kind: r.kind.as_str(),
            action: self.text(r.action.as_deref()),
            admin: r.admin.as_deref().map(|a| self.shown.admin(a)),
            account: self.account(r.user.as_deref()),
            address: self.ip(r.ip),
            mailbox: r.mailbox.as_deref().map(|m| self.shown.mailbox(m)),
            msgid: self.text(r.msgid.as_deref()),
            reason: self.reason(r),
        }
    }

    fn mailbox_row(&self, r: &Record, kind: &'static str) -> MailboxRow {
        MailboxRow {
            time: r.time,
            kind,
            action: self.text(r.action.as_deref()),
            mailbox: r.mailbox.as_deref().map(|m| self.shown.mailbox(m)),
            from_mailbox: r.from_mailbox.as_deref().map(|m| self.shown.mailbox(m)),
            uid: r.uid,
            msgid: self.text(r.msgid.as_deref()),
            admin: r.admin.as_deref().map(|a| self.shown.admin(a)),
        }
    }

    /// What was gathered, sorted for the report.
    pub fn finish(self) -> Gathered {
        let keyed = |m: BTreeMap<String, Outcomes>| -> Vec<KeyedOutcomes> {
            m.into_iter()
                .map(|(key, logins)| KeyedOutcomes { key, logins })
                .collect()
        };
        let mut by_protocol = keyed(self.by_protocol.map);
        if self.by_protocol.other.total() > 0 {
            by_protocol.push(KeyedOutcomes {
                key: "other".into(),
                logins: self.by_protocol.other,
            });
        }
        let mut by_country = keyed(self.by_country);
        by_country.sort_by(|a, b| {
            b.logins
                .total()
                .cmp(&a.logins.total())
                .then(a.key.cmp(&b.key))
        });
        let as_orgs = self.as_orgs;
        let mut by_as: Vec<AsOutcomes> = self
            .by_as
            .map
            .into_iter()
            .map(|(asn, logins)| AsOutcomes {
                asn,
                org: asn.and_then(|a| as_orgs.get(&a).cloned()),
                logins,
            })
            .collect();
        by_as.sort_by(|a, b| {
            b.logins
                .total()
                .cmp(&a.logins.total())
                .then(a.asn.cmp(&b.asn))
        });
        if self.by_as.other.total() > 0 {
            by_as.push(AsOutcomes {
                asn: None,
                org: Some("other".into()),
                logins: self.by_as.other,
            });
        }
        let mut by_severity: Vec<Count> = self
            .by_severity
            .into_iter()
            .rev()
            .map(|(s, count)| Count {
                key: s.as_str().to_string(),
                count,
            })
            .collect();
        by_severity.retain(|c| c.count > 0);
        Gathered {
            logins: Logins {
                total: self.total,
                by_protocol,
                by_day: keyed(self.by_day),
                by_country,
                by_as,
            },
            top_failing_addresses: self.failing_addresses.top(),
            top_failing_accounts: self.failing_accounts.top(),
            alerts: Alerts {
                total: self.alerts_total,
                observed: self.alerts_observed,
                by_rule: self
                    .by_rule
                    .into_iter()
                    .map(|(key, count)| Count { key, count })
                    .collect(),
                by_severity,
            },
            holds_and_blocks: self.holds,
            admin_actions: self.admin,
            sending: self.sending,
            access: self.access,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many more distinct failing names than the summary keeps: the heavy hitters stay
    /// on top, counted at most `error_bound` low, and the list says it is approximate.
    #[test]
    fn the_top_lists_stay_bounded_and_keep_the_heavy_hitters() {
        let mut h = Heavy::default();
        for i in 0..(3 * TOP_CAPACITY) {
            h.add(format!("one-off-{i}"));
            if i % 10 == 0 {
                h.add("attacker".into());
            }
            assert!(h.counts.len() <= TOP_CAPACITY);
        }
        let true_count = (3 * TOP_CAPACITY / 10) as u64;
        let top = h.top();
        assert_eq!(top.rows[0].name, "attacker");
        assert!(top.approximate);
        assert!(top.rows[0].failures <= true_count);
        assert!(top.rows[0].failures + top.error_bound >= true_count);
        assert!(top.rows.len() <= TOP_SHOWN);

        let mut exact = Heavy::default();
        for name in ["a", "b", "a"] {
            exact.add(name.into());
        }
        let top = exact.top();
        assert!(!top.approximate);
        assert_eq!(
            top.rows[0],
            TopRow {
                name: "a".into(),
                failures: 2
            }
        );
    }

    #[test]
    fn lists_keep_their_first_rows_and_count_the_rest() {
        let mut l: List<u32> = List::default();
        for i in 0..(LIST_CAP as u32 + 7) {
            l.push(i);
        }
        assert_eq!(l.rows.len(), LIST_CAP);
        assert_eq!(l.omitted, 7);
        assert_eq!(l.rows[0], 0);
    }

    #[test]
    fn login_outcomes_follow_the_password_then_the_verdict() {
        let at = "2026-11-28T10:00:00Z".parse().unwrap();
        let mut r = Record::new(Kind::Auth, crate::audit::Source::Live, at);
        r.result = Some(Outcome::Fail);
        r.verdict = Some("deny".into());
        assert_eq!(LoginOutcome::of(&r), LoginOutcome::Failed);
        r.result = Some(Outcome::Ok);
        assert_eq!(LoginOutcome::of(&r), LoginOutcome::Refused);
        r.verdict = Some("accept".into());
        assert_eq!(LoginOutcome::of(&r), LoginOutcome::Ok);
        r.verdict = None;
        assert_eq!(LoginOutcome::of(&r), LoginOutcome::Ok);
        r.result = None;
        r.verdict = Some("deny".into());
        assert_eq!(LoginOutcome::of(&r), LoginOutcome::Refused);
    }
}
