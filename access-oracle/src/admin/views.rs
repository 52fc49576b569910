//! The admin socket's answers as typed views: what the oracle sends for each request and
//! what `ctl` reads back and renders.
//!
//! The server builds a view from the engine's typed accessors (the live maps, the rules'
//! settings, the baselines: this module sits above the engine and assembles them) and
//! sends it as the `data` of its JSON answer; `ctl` deserializes the same struct and
//! renders it (`ctl.rs`), so the two cannot disagree about a field. Times travel as
//! RFC 3339. The JSON is also what `ctl --json` prints and scripts read: add fields,
//! do not rename them.

use std::net::IpAddr;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::AdminRequest;
use crate::alert::{Alert, Context};
use crate::engine::Engine;
use crate::enrich::Rdns;
use crate::enrich::disabled::DisabledAccounts;
use crate::enrich::{GeoIp, IpLists};
use crate::protocol::Outcome;
use crate::rules::{Response, Severity};
use crate::state::baseline::{Seen, SendCache};
use crate::state::{Entry, Hold, Origin, Secs};

/// `secs` as a timestamp (the epoch for a value out of range, which the state never
/// holds).
fn ts(secs: Secs) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Any answer of the admin socket, as its request expects it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum View {
    /// `status`.
    Status(Box<StatusView>),
    /// `account`.
    Account(Box<AccountView>),
    /// `account --baseline`.
    Baseline(Box<BaselineView>),
    /// `alerts`: the most recent, newest last.
    Alerts(Vec<AlertView>),
    /// `release`.
    Release(ReleaseView),
    /// `unblock`.
    Unblock(UnblockView),
    /// `hold`: the hold now in force.
    Hold(HeldAccount),
    /// `block`: the block now in force.
    Block(BlockedAddress),
    /// `holds`: every hold and block in force.
    Holds(InForce),
}

impl View {
    /// Reads the `data` of an answer to `req` (the JSON says what it is only together
    /// with the request that asked for it).
    pub fn read(req: &AdminRequest, data: serde_json::Value) -> Result<View, serde_json::Error> {
        use serde_json::from_value as read;
        Ok(match req {
            AdminRequest::Status => View::Status(read(data)?),
            AdminRequest::Account {
                baseline: false, ..
            } => View::Account(read(data)?),
            AdminRequest::Account { baseline: true, .. } => View::Baseline(read(data)?),
            AdminRequest::Alerts { .. } => View::Alerts(read(data)?),
            AdminRequest::Release { .. } => View::Release(read(data)?),
            AdminRequest::Unblock { .. } => View::Unblock(read(data)?),
            AdminRequest::Hold { .. } => View::Hold(read(data)?),
            AdminRequest::Block { .. } => View::Block(read(data)?),
            AdminRequest::Holds => View::Holds(read(data)?),
        })
    }
}

/// A hold on an account, a block on an address or a throttle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    /// When it was applied.
    pub since: Timestamp,
    /// When it ends by itself.
    pub until: Timestamp,
    /// The rule that applied it, or `admin`.
    pub rule: String,
    /// The text the client sees.
    pub message: String,
}

impl From<&Hold> for HoldView {
    fn from(h: &Hold) -> Self {
        HoldView {
            since: ts(h.since),
            until: ts(h.until),
            rule: h.rule.to_string(),
            message: h.message.to_string(),
        }
    }
}

/// An account's hold in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAccount {
    /// The account.
    pub account: String,
    /// The hold.
    #[serde(flatten)]
    pub hold: HoldView,
    /// Who put it there: the rule, or the administrator.
    #[serde(default)]
    pub by: String,
    /// Why, when the administrator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which sources it refuses: `all`, or `unfamiliar` (not the networks the account
    /// logged in from lately).
    #[serde(default = "scope_all")]
    pub scope: String,
}

fn scope_all() -> String {
    "all".into()
}

impl HeldAccount {
    /// The view of `account`'s hold.
    pub fn of(account: String, h: &Hold, info: Option<&crate::state::HoldInfo>) -> HeldAccount {
        HeldAccount {
            account,
            hold: HoldView::from(h),
            by: info.map_or_else(|| h.rule.to_string(), |i| i.by.to_string()),
            reason: info.and_then(|i| i.reason.as_deref().map(str::to_string)),
            scope: info
                .map_or(crate::state::HoldScope::All, |i| i.scope)
                .as_str()
                .into(),
        }
    }
}

/// `ctl hold USER`: holds the account (see [`Engine::hold`]).
pub fn hold(
    engine: &Engine,
    user: &str,
    secs: u64,
    reason: Option<&str>,
    now: Timestamp,
    by: &str,
) -> HeldAccount {
    let (account, h) = engine.hold(user, secs, reason, now, by);
    let info = crate::state::HoldInfo {
        by: by.into(),
        reason: reason.map(Into::into),
        scope: crate::state::HoldScope::All,
        familiar: Vec::new(),
    };
    HeldAccount::of(account, &h, Some(&info))
}

/// `ctl block IP|CIDR`: blocks it (see [`Engine::block`]).
pub fn block(
    engine: &Engine,
    net: ipnet::IpNet,
    secs: u64,
    reason: Option<&str>,
    now: Timestamp,
    by: &str,
) -> BlockedAddress {
    let (net, b) = engine.block(net, secs, reason, now, by);
    BlockedAddress::of(&net, &b)
}

/// A block in force on an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedAddress {
    /// The address (a block on one address), or the network (`2001:db8::/64`).
    pub ip: String,
    /// The block.
    #[serde(flatten)]
    pub hold: HoldView,
    /// Who put it there: the rule, or the administrator.
    #[serde(default)]
    pub by: String,
    /// Why, when the administrator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Earlier blocks of the same network it repeats (it was made longer for them).
    #[serde(default)]
    pub repeats: u32,
}

impl BlockedAddress {
    /// The view of a block on `net`.
    pub fn of(net: &ipnet::IpNet, b: &crate::state::Block) -> BlockedAddress {
        BlockedAddress {
            ip: net_text(net),
            hold: HoldView::from(&b.hold),
            by: b.by.to_string(),
            reason: b.reason.as_deref().map(str::to_string),
            repeats: b.repeats,
        }
    }
}

/// A network as shown: a single address without its prefix length.
pub fn net_text(net: &ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Holds and blocks in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce {
    /// Accounts held, by name.
    pub holds: Vec<HeldAccount>,
    /// Addresses blocked.
    pub ip_blocks: Vec<BlockedAddress>,
}

/// Holds and blocks in force at `now`.
pub fn in_force(engine: &Engine, now: Timestamp) -> InForce {
    let secs = now.as_second();
    let state = engine.state();
    InForce {
        holds: state
            .active_holds(secs)
            .into_iter()
            .map(|(account, h, info)| HeldAccount::of(account, &h, info.as_ref()))
            .collect(),
        ip_blocks: state
            .blocks()
            .active(secs)
            .iter()
            .map(|(net, b)| BlockedAddress::of(net, b))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// account

/// `ctl account USER`: what is known about one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    /// The account, as the oracle keys it (lowercased unless case-sensitive).
    pub account: String,
    /// Whether the oracle has a live entry for it.
    pub tracked: bool,
    /// Its hold in force.
    pub hold: Option<HoldView>,
    /// With a hold: who put it there, why, and which sources it refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_scope: Option<HoldScopeView>,
    /// The networks the account logged in from successfully within
    /// `[rules.failed_logins_account] familiar_days`: what a hold with scope
    /// `unfamiliar` would spare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub familiar: Vec<String>,
    /// The live entry, when tracked.
    #[serde(flatten)]
    pub live: Option<LiveAccount>,
}

/// Who put an account's hold there, why, and which sources it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldScopeView {
    /// `all`, or `unfamiliar`: not the networks in `spared`.
    pub scope: String,
    /// The rule, or the administrator (`uid 0 (root)`).
    pub by: String,
    /// Why, when the administrator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With scope `unfamiliar`: the networks whose requests go on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spared: Vec<String>,
}

impl HoldScopeView {
    fn of(h: &Hold, info: Option<&crate::state::HoldInfo>) -> HoldScopeView {
        HoldScopeView {
            scope: info
                .map_or(crate::state::HoldScope::All, |i| i.scope)
                .as_str()
                .into(),
            by: info.map_or_else(|| h.rule.to_string(), |i| i.by.to_string()),
            reason: info.and_then(|i| i.reason.as_deref().map(str::to_string)),
            spared: info
                .filter(|i| i.scope == crate::state::HoldScope::Unfamiliar)
                .map(|i| i.familiar.iter().map(net_text).collect())
                .unwrap_or_default(),
        }
    }
}

/// A tracked account's live entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveAccount {
    /// Failed logins in the failed-logins rule's window.
    pub failed_logins: FailedLoginsView,
    /// Recipients in the recipient ceiling's window.
    pub recipients: RecipientsView,
    /// Totals since the entry was made.
    pub totals: TotalsView,
    /// When the account was last seen.
    pub last_seen: Timestamp,
    /// Recent activity, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// The last successful login.
    pub last_login: Option<LastLogin>,
}

/// Failed logins against the rule's threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedLoginsView {
    /// In the window.
    pub count: u64,
    /// The rule's threshold.
    pub threshold: u64,
    /// The rule's window.
    pub window_secs: u64,
}

/// Recipients against the ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientsView {
    /// In the window.
    pub count: u64,
    /// The ceiling.
    pub limit: u64,
    /// The ceiling's window.
    pub window_secs: u64,
    /// When recipients are accepted again, while at the ceiling.
    pub throttled_until: Option<Timestamp>,
}

/// An account's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsView {
    /// Successful logins.
    pub logins_ok: u64,
    /// Failed logins.
    pub logins_failed: u64,
    /// Messages sent.
    pub messages: u64,
    /// Recipients accepted.
    pub rcpts_accepted: u64,
    /// Recipients refused.
    pub rcpts_refused: u64,
    /// Requests refused (deferred or denied).
    pub refused: u64,
}

/// The last successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLogin {
    /// When.
    pub time: Timestamp,
    /// From where.
    pub ip: Option<IpAddr>,
    /// `smtp`, `imap`, ...
    pub protocol: String,
}

/// One thing an account did (`track::timeline::Entry` with its times as timestamps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum TimelineEntry {
    /// A login attempt.
    Login {
        /// When.
        time: Timestamp,
        /// `smtp`, `imap`, ...
        protocol: String,
        /// From where.
        ip: Option<IpAddr>,
        /// Right or wrong password.
        result: Outcome,
        /// Dovecot's session id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// When the session ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logout: Option<Timestamp>,
        /// Bytes from the client in the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_in: Option<u64>,
        /// Bytes to the client in the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_out: Option<u64>,
        /// Live or from a log.
        origin: Origin,
        /// The SASL mechanism.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mech: Option<String>,
        /// Exim's authenticator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authenticator: Option<String>,
        /// The client's source port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// The server port the client connected to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local_port: Option<u16>,
        /// Whether the connection was encrypted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<bool>,
        /// The TLS cipher suite.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_cipher: Option<String>,
        /// The client's name (HELO, IMAP ID).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// A message the account sent.
    Sent {
        /// When.
        time: Timestamp,
        /// Exim's message id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msgid: Option<String>,
        /// How many recipients.
        rcpts: u64,
        /// From where.
        ip: Option<IpAddr>,
        /// Live or from a log.
        origin: Origin,
    },
    /// A delivery, deferral or bounce of a message the account sent.
    Delivery {
        /// When.
        time: Timestamp,
        /// Exim's message id.
        msgid: String,
        /// The recipient.
        rcpt: Option<String>,
        /// `delivered`, `deferred` or `bounced`.
        outcome: String,
    },
    /// A session whose login was not seen, from its logout.
    Session {
        /// When it ended.
        time: Timestamp,
        /// `imap`, `pop3`, ...
        protocol: String,
        /// Dovecot's session id.
        session: Option<String>,
        /// Bytes from the client.
        bytes_in: Option<u64>,
        /// Bytes to the client.
        bytes_out: Option<u64>,
    },
}

impl From<&Entry> for TimelineEntry {
    fn from(e: &Entry) -> Self {
        let text = |s: &Option<std::sync::Arc<str>>| s.as_deref().map(str::to_string);
        match e {
            Entry::Login {
                time,
                protocol,
                ip,
                result,
                session,
                logout,
                bytes_in,
                bytes_out,
                origin,
                detail,
            } => {
                let d = detail.as_deref().cloned().unwrap_or_default();
                TimelineEntry::Login {
                    time: ts(*time),
                    protocol: protocol.to_string(),
                    ip: *ip,
                    result: *result,
                    session: text(session),
                    logout: logout.map(ts),
                    bytes_in: *bytes_in,
                    bytes_out: *bytes_out,
                    origin: *origin,
                    mech: text(&d.mech),
                    authenticator: text(&d.authenticator),
                    port: d.port,
                    local_port: d.local_port,
                    tls: d.tls,
                    tls_cipher: text(&d.cipher),
                    client: text(&d.client),
                }
            }
            Entry::Sent {
                time,
                msgid,
                rcpts,
                ip,
                origin,
            } => TimelineEntry::Sent {
                time: ts(*time),
                msgid: text(msgid),
                rcpts: *rcpts,
                ip: *ip,
                origin: *origin,
            },
            Entry::Delivery {
                time,
                msgid,
                rcpt,
                outcome,
            } => TimelineEntry::Delivery {
                time: ts(*time),
                msgid: msgid.to_string(),
                rcpt: text(rcpt),
                outcome: (*outcome).to_string(),
            },
            Entry::Session {
                time,
                protocol,
                session,
                bytes_in,
                bytes_out,
            } => TimelineEntry::Session {
                time: ts(*time),
                protocol: protocol.to_string(),
                session: text(session),
                bytes_in: *bytes_in,
                bytes_out: *bytes_out,
            },
        }
    }
}

/// What is known about `user` at `now`.
pub fn account(engine: &Engine, user: &str, now: Timestamp) -> AccountView {
    let secs = now.as_second();
    let key = engine.account_key(user).into_owned();
    let rules = engine.rules();
    let familiar_since = secs.saturating_sub(
        rules
            .failed_logins_account
            .familiar_days
            .saturating_mul(86_400) as Secs,
    );
    let familiar: Vec<String> = engine
        .state()
        .familiar(&key, familiar_since)
        .iter()
        .map(net_text)
        .collect();
    let Some(acct) = engine.state().account(&key) else {
        return AccountView {
            account: key,
            tracked: false,
            hold: None,
            hold_scope: None,
            familiar,
            live: None,
        };
    };
    let fa = &rules.failed_logins_account;
    let rc = &rules.recipient_ceiling;
    let mut rcpts = acct.rcpts.clone();
    rcpts.prune(secs, rc.window_secs as Secs);
    let t = &acct.totals;
    let live = LiveAccount {
        failed_logins: FailedLoginsView {
            count: acct
                .rules
                .failed_logins_account
                .failures
                .count(secs, fa.window_secs as Secs) as u64,
            threshold: fa.threshold,
            window_secs: fa.window_secs,
        },
        recipients: RecipientsView {
            count: rcpts.len() as u64,
            limit: rc.limit,
            window_secs: rc.window_secs,
            throttled_until: rcpts
                .below_limit_at(rc.limit as usize, rc.window_secs as Secs)
                .map(ts),
        },
        totals: TotalsView {
            logins_ok: t.logins_ok,
            logins_failed: t.logins_failed,
            messages: t.messages,
            rcpts_accepted: t.rcpts_accepted,
            rcpts_refused: t.rcpts_refused,
            refused: t.refused,
        },
        last_seen: ts(acct.last_seen),
        timeline: acct.timeline.entries().map(TimelineEntry::from).collect(),
        last_login: acct.last_login.as_ref().map(|(t, ip, proto)| LastLogin {
            time: ts(*t),
            ip: *ip,
            protocol: proto.to_string(),
        }),
    };
    let hold = acct.active_hold(secs);
    AccountView {
        account: key,
        tracked: true,
        hold: hold.map(HoldView::from),
        hold_scope: hold.map(|h| HoldScopeView::of(h, acct.hold_info.as_deref())),
        familiar,
        live: Some(live),
    }
}

// ---------------------------------------------------------------------------------------
// account --baseline

/// `ctl account USER --baseline`: what is normal for an account and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineView {
    /// The account.
    pub account: String,
    /// Whether it has a baseline.
    pub known: bool,
    /// The baseline, when known.
    #[serde(flatten)]
    pub learnt: Option<KnownBaseline>,
}

/// An account's baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownBaseline {
    /// First seen.
    pub since: Timestamp,
    /// Last learnt something.
    pub last_seen: Timestamp,
    /// Successful logins learnt.
    pub logins: u64,
    /// Still learning (new-country and new-ASN alerts wait).
    pub learning: bool,
    /// Learning lasts at least until then...
    pub learning_until: Timestamp,
    /// ...and this many logins.
    pub learning_logins: u64,
    /// Countries, most logins first.
    pub countries: Vec<SeenView>,
    /// ASNs (`AS64500`), most logins first.
    pub asns: Vec<SeenView>,
    /// Networks, most logins first.
    pub networks: Vec<SeenView>,
    /// Client names (HELO, IMAP ID), most logins first.
    pub clients: Vec<SeenView>,
    /// Successful logins per hour of the day (UTC), relative.
    pub logins_by_hour_utc: Vec<u64>,
    /// The hours (UTC) with logins.
    pub active_hours_utc: Vec<u8>,
    /// The sending rate.
    pub sending: SendingView,
    /// The last login from a located address.
    pub last_place: Option<PlaceView>,
}

/// One country, ASN, network or client of a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenView {
    /// What was seen.
    #[serde(flatten)]
    pub key: SeenKey,
    /// First time.
    pub first: Timestamp,
    /// Last time.
    pub last: Timestamp,
    /// Successful logins.
    pub logins: u64,
}

/// What a [`SeenView`] is about; named by its JSON key (`"country": "DE"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenKey {
    /// A country code.
    Country(String),
    /// An ASN, `AS64500`.
    Asn(String),
    /// A network.
    Network(String),
    /// A client name.
    Client(String),
}

impl SeenKey {
    /// The value, whatever its kind.
    pub fn value(&self) -> &str {
        match self {
            SeenKey::Country(s) | SeenKey::Asn(s) | SeenKey::Network(s) | SeenKey::Client(s) => s,
        }
    }
}

/// A baseline's sending rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendingView {
    /// Recipients per active hour, on average.
    pub hourly_average: f64,
    /// Completed hours with sending in that average.
    pub hours: u64,
    /// The most recipients in one completed hour.
    pub peak: u64,
    /// Recipients in the hour in progress.
    pub this_hour: u64,
    /// Whether the rate is learnt (the outbound-spike rule applies).
    pub learnt: bool,
    /// The outbound-spike rule's threshold for this account.
    pub spike_threshold: u64,
}

/// The last login from a located address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceView {
    /// When.
    pub time: Timestamp,
    /// From where.
    pub ip: IpAddr,
    /// Its country.
    pub country: Option<String>,
    /// Latitude, degrees.
    pub lat: f32,
    /// Longitude, degrees.
    pub lon: f32,
    /// The database's accuracy radius, km (0 when unknown).
    pub accuracy_km: u16,
    /// Its ASN.
    pub asn: Option<u32>,
}

/// The baseline of `user` at `now`.
pub fn baseline(engine: &Engine, user: &str, now: Timestamp) -> BaselineView {
    let secs = now.as_second();
    let key = engine.account_key(user).into_owned();
    let Some(b) = engine.baseline_of(&key) else {
        return BaselineView {
            account: key,
            known: false,
            learnt: None,
        };
    };
    let config = engine.baseline_config();
    let rules = engine.rules();
    fn seen<K>(list: &[Seen<K>], key: impl Fn(&K) -> SeenKey) -> Vec<SeenView> {
        let mut v: Vec<&Seen<K>> = list.iter().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.last.cmp(&a.last)));
        v.into_iter()
            .map(|s| SeenView {
                key: key(&s.key),
                first: ts(s.first_secs()),
                last: ts(s.last_secs()),
                logins: u64::from(s.count),
            })
            .collect()
    }
    let learnt = KnownBaseline {
        since: ts(b.first_seen),
        last_seen: ts(b.last_seen),
        logins: u64::from(b.logins),
        learning: b.learning(&config, secs),
        learning_until: ts(b.first_seen + config.learning_secs as Secs),
        learning_logins: u64::from(config.learning_logins),
        countries: seen(&b.countries, |c| SeenKey::Country(c.to_string())),
        asns: seen(&b.asns, |a| SeenKey::Asn(format!("AS{a}"))),
        networks: seen(&b.networks, |n| SeenKey::Network(n.to_string())),
        clients: seen(&b.clients, |c| SeenKey::Client(c.to_string())),
        logins_by_hour_utc: b.hours.iter().map(|h| u64::from(*h)).collect(),
        active_hours_utc: (0u8..24).filter(|h| b.hours[*h as usize] > 0).collect(),
        sending: SendingView {
            hourly_average: (f64::from(b.send.average) * 10.0).round() / 10.0,
            hours: u64::from(b.send.hours),
            peak: u64::from(b.send.peak),
            this_hour: u64::from(b.send.count),
            learnt: b.send_learnt(&config, secs),
            spike_threshold: rules.outbound_spike.threshold(&SendCache {
                average: b.send.average,
                ..SendCache::default()
            }),
        },
        last_place: b.last_place.as_ref().map(|p| PlaceView {
            time: ts(p.time),
            ip: p.ip,
            country: p.country.map(|c| c.to_string()),
            lat: p.lat,
            lon: p.lon,
            accuracy_km: p.accuracy_km,
            asn: p.asn,
        }),
    };
    BaselineView {
        account: key,
        known: true,
        learnt: Some(learnt),
    }
}

// ---------------------------------------------------------------------------------------
// alerts

/// One alert as `ctl alerts` shows it (the fields of [`Alert`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// When the rule fired.
    pub time: Timestamp,
    /// The rule's name.
    pub rule: String,
    /// Its severity.
    pub severity: Severity,
    /// The account concerned.
    pub account: Option<String>,
    /// The source address.
    pub ip: Option<IpAddr>,
    /// Its reverse DNS name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdns: Option<String>,
    /// The protocol of the event.
    pub protocol: Option<String>,
    /// What was counted in the window.
    pub count: u64,
    /// The same, named, as the rule reports it (shown by `--json`, not in the table).
    pub counts: serde_json::Value,
    /// The rule's threshold.
    pub threshold: u64,
    /// The rule's window, in seconds.
    pub window_secs: u64,
    /// The response applied.
    pub response: Response,
    /// When the response ends by itself.
    pub expires: Timestamp,
    /// One line for a human.
    pub summary: String,
    /// The alert's context: recent logins, sending, what is in force, what was done
    /// and the command that undoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<Context>>,
    /// The rule only observes: nothing was done (the context's action says what would
    /// have been).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observed: bool,
}

impl From<&Alert> for AlertView {
    fn from(a: &Alert) -> Self {
        AlertView {
            time: a.time,
            rule: a.rule.to_string(),
            severity: a.severity,
            account: a.account.clone(),
            ip: a.ip,
            rdns: a.rdns.clone(),
            protocol: a.protocol.clone(),
            count: a.count,
            counts: a.counts.clone(),
            threshold: a.threshold,
            window_secs: a.window_secs,
            response: a.response,
            expires: a.expires,
            summary: a.summary.clone(),
            context: a.context.clone(),
            observed: a.observed,
        }
    }
}

/// The `limit` most recent alerts, newest last.
pub fn alerts(engine: &Engine, limit: usize) -> Vec<AlertView> {
    engine
        .recent_alerts(limit)
        .iter()
        .map(|a| AlertView::from(&**a))
        .collect()
}

// ---------------------------------------------------------------------------------------
// release, unblock

/// `ctl release USER`: what was cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    /// The account.
    pub account: String,
    /// Whether it was tracked (and so released).
    pub released: bool,
    /// The hold that was ended, if one was in force.
    #[serde(default)]
    pub hold: Option<HoldView>,
    /// Whether a recipient count or throttle was reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_recipient_count: Option<bool>,
    /// Why nothing was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Releases `user` (see [`Engine::release`]); `by` names the administrator.
pub fn release(engine: &Engine, user: &str, now: Timestamp, by: &str) -> ReleaseView {
    let account = engine.account_key(user).into_owned();
    match engine.release(user, now, by) {
        Some(r) => ReleaseView {
            account,
            released: true,
            hold: r.hold.as_ref().map(HoldView::from),
            cleared_recipient_count: Some(r.cleared_recipient_count),
            reason: None,
        },
        None => ReleaseView {
            account,
            released: false,
            hold: None,
            cleared_recipient_count: None,
            reason: Some("account not tracked".into()),
        },
    }
}

/// `ctl unblock IP|CIDR`: what was lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnblockView {
    /// The address or network asked for.
    pub ip: String,
    /// Whether a block was in force and lifted.
    pub unblocked: bool,
    /// The (strongest) block lifted.
    #[serde(default)]
    pub block: Option<HoldView>,
    /// Every block lifted: on the address or network, inside it, or covering the
    /// address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifted: Vec<BlockedAddress>,
    /// Why nothing was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Unblocks `ip` (see [`Engine::unblock`]); `by` names the administrator.
pub fn unblock(engine: &Engine, net: ipnet::IpNet, now: Timestamp, by: &str) -> UnblockView {
    let lifted = engine.unblock(net, now, by);
    let strongest = lifted
        .iter()
        .max_by_key(|(_, b)| (b.hold.deny, b.hold.until))
        .map(|(_, b)| HoldView::from(&b.hold));
    UnblockView {
        ip: net_text(&net),
        unblocked: !lifted.is_empty(),
        block: strongest,
        lifted: lifted
            .iter()
            .map(|(n, b)| BlockedAddress::of(n, b))
            .collect(),
        reason: None,
    }
}

// ---------------------------------------------------------------------------------------
// status

/// Counters as (name, value) pairs, in their order.
pub type Named = Vec<(String, u64)>;

fn named(pairs: &[(&str, u64)]) -> Named {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

/// `ctl status`: the oracle, its enrichment, its counters, what is in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The oracle's version.
    pub version: String,
    /// When it started.
    pub started: Timestamp,
    /// Seconds since.
    pub uptime_secs: i64,
    /// The config file (and overrides), or the defaults.
    pub config: String,
    /// The Exim socket.
    pub exim_socket: String,
    /// Live accounts.
    pub accounts_tracked: u64,
    /// Live addresses.
    pub ips_tracked: u64,
    /// Baselines.
    pub baselines: u64,
    /// GeoIP, lists, reverse DNS, disabled accounts.
    pub enrichment: EnrichmentView,
    /// Holds and blocks in force.
    pub in_force: InForce,
    /// The audit trail's counters; `None` when it is off.
    pub audit: Option<AuditView>,
    /// The state journal's counters; `None` when it is off.
    #[serde(default)]
    pub journal: Option<JournalView>,
    /// The engine's counters.
    pub counters: CountersView,
    /// Each listener's connection counters.
    pub listeners: ListenersView,
    /// Each external action's counters (`[firewall]`, `[fail2ban]`, `[crowdsec]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionView>,
}

/// One external action's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionView {
    /// Its name (its table).
    pub name: String,
    /// Steps applied.
    pub applied: u64,
    /// Steps given up on after their retries (each raised an alert).
    pub failed: u64,
    /// Further attempts after a failed one.
    pub retried: u64,
    /// Steps dropped because its queue was full.
    pub dropped: u64,
    /// Unblocks sent because a block ended.
    pub expired: u64,
}

/// What `status` needs from the server layer.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// The config file (and overrides), or the defaults.
    pub config: String,
    /// The Exim socket.
    pub exim_socket: String,
    /// Each listener's connection counters.
    pub listeners: ListenersView,
}

/// The status at `now`.
pub fn status(engine: &Engine, now: Timestamp, server: ServerFacts) -> StatusView {
    let state = engine.state();
    StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started: engine.started(),
        uptime_secs: now.as_second() - engine.started().as_second(),
        config: server.config,
        exim_socket: server.exim_socket,
        accounts_tracked: state.account_count() as u64,
        ips_tracked: state.ip_count() as u64,
        baselines: state.baseline_count() as u64,
        enrichment: EnrichmentView::of(&engine.enrichment()),
        in_force: in_force(engine, now),
        audit: engine.audit().map(|a| typed(a.status(), "audit")),
        journal: engine.journal().map(|j| JournalView::of(j)),
        counters: CountersView::of(&engine.stats.snapshot()),
        listeners: server.listeners,
        actions: engine
            .action_counters()
            .iter()
            .map(|c| {
                let s = c.snapshot();
                ActionView {
                    name: s.name.to_string(),
                    applied: s.applied,
                    failed: s.failed,
                    retried: s.retried,
                    dropped: s.dropped,
                    expired: s.expired,
                }
            })
            .collect(),
    }
}

/// A component's status JSON in its typed form. The components build their status as
/// JSON themselves (their own tests read it so); a field they renamed would show as
/// the default here, and `views::tests` pins every one against its typed form.
fn typed<T: serde::de::DeserializeOwned + Default>(v: serde_json::Value, what: &str) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::warn!(component = what, error = %e, "status of an unexpected shape");
        T::default()
    })
}

/// Each listener's connection counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenersView {
    /// The Exim socket.
    pub exim: Named,
    /// The Dovecot policy endpoint.
    pub policy: Named,
    /// The admin socket.
    pub admin: Named,
}

impl ListenersView {
    /// From the listeners' (name, value) pairs.
    pub fn new(exim: &[(&str, u64)], policy: &[(&str, u64)], admin: &[(&str, u64)]) -> Self {
        ListenersView {
            exim: named(exim),
            policy: named(policy),
            admin: named(admin),
        }
    }
}

/// The engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    /// Requests by verb.
    pub requests: Named,
    /// Replies by kind.
    pub replies: Named,
    /// Malformed requests.
    pub malformed: u64,
    /// Connections accepted on the Exim socket.
    pub connections: u64,
    /// Connections open.
    pub open_connections: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
    /// Alerts dropped (queue full).
    pub alerts_dropped: u64,
    /// Alerts the sinks failed to deliver.
    pub alert_write_errors: u64,
    /// Admin requests refused.
    pub admin_refused: u64,
    /// Login attempts learnt from logs only.
    pub log_attempts: u64,
    /// Log lines read.
    pub source_lines: u64,
    /// Events from logs.
    pub source_events: u64,
    /// Unrecognised log lines.
    pub source_unrecognised: u64,
    /// Dead-lettered log lines.
    pub source_dead_letters: u64,
    /// Source errors.
    pub source_errors: u64,
    /// The Dovecot policy endpoint's counters.
    pub policy: Named,
    /// Each alert sink's counters.
    pub sinks: Vec<SinkView>,
}

impl CountersView {
    /// From the engine's counters.
    pub fn of(s: &crate::engine::stats::StatsSnapshot) -> Self {
        CountersView {
            requests: named(&s.requests),
            replies: named(&s.replies),
            malformed: s.malformed,
            connections: s.connections,
            open_connections: s.open_connections,
            alerts_raised: s.alerts_raised,
            alerts_dropped: s.alerts_dropped,
            alert_write_errors: s.alert_write_errors,
            admin_refused: s.admin_refused,
            log_attempts: s.log_attempts,
            source_lines: s.source_lines,
            source_events: s.source_events,
            source_unrecognised: s.source_unrecognised,
            source_dead_letters: s.source_dead_letters,
            source_errors: s.source_errors,
            policy: named(&s.policy),
            sinks: s
                .sinks
                .iter()
                .map(|k| SinkView {
                    name: k.name.clone(),
                    kind: k.kind.to_string(),
                    delivered: k.delivered,
                    failed: k.failed,
                    retried: k.retried,
                    dropped: k.dropped,
                    queued: k.queued,
                    grouped: k.grouped,
                    suppressed: k.suppressed,
                })
                .collect(),
        }
    }

    /// The counters without a list of their own, as (name, value).
    pub fn scalars(&self) -> [(&'static str, u64); 13] {
        [
            ("malformed", self.malformed),
            ("connections", self.connections),
            ("open_connections", self.open_connections),
            ("alerts_raised", self.alerts_raised),
            ("alerts_dropped", self.alerts_dropped),
            ("alert_write_errors", self.alert_write_errors),
            ("admin_refused", self.admin_refused),
            ("log_attempts", self.log_attempts),
            ("source_lines", self.source_lines),
            ("source_events", self.source_events),
            ("source_unrecognised", self.source_unrecognised),
            ("source_dead_letters", self.source_dead_letters),
            ("source_errors", self.source_errors),
        ]
    }
}

/// One alert sink's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkView {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts given up.
    pub failed: u64,
    /// Further attempts after a failed one.
    pub retried: u64,
    /// Alerts dropped by its `when_full` policy.
    pub dropped: u64,
    /// Alerts waiting in its queue.
    pub queued: u64,
    /// Alerts folded into a group (`group_secs`).
    #[serde(default)]
    pub grouped: u64,
    /// Notifications held back by the rate limit.
    #[serde(default)]
    pub suppressed: u64,
}

/// The audit trail's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// Its directory.
    pub dir: PathBuf,
    /// Records written.
    pub written: u64,
    /// Records waiting to be written.
    pub waiting: u64,
    /// Write errors.
    pub write_errors: u64,
}

/// The state journal's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalView {
    /// Changes appended since start.
    pub appended: u64,
    /// Bytes appended since start.
    pub bytes: u64,
    /// Changes kept in memory only because appending failed.
    pub lost: u64,
    /// Flushes to disk.
    pub flushes: u64,
    /// Appends, flushes or new files that failed.
    pub errors: u64,
    /// Appending has failed and not resumed (it resumes at the next snapshot).
    pub failing: bool,
    /// The file being appended to (none while no file could be made).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How far its data goes, in bytes (the file is made whole at once).
    #[serde(default)]
    pub file_len: u64,
}

impl JournalView {
    fn of(j: &crate::persist::journal::JournalFile) -> JournalView {
        use std::sync::atomic::Ordering::Relaxed;
        let s = j.status();
        let (file, file_len) = match j.current() {
            Some((f, n)) => (Some(f), n),
            None => (None, 0),
        };
        JournalView {
            file,
            file_len,
            appended: s.appended.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            lost: s.lost.load(Relaxed),
            flushes: s.flushes.load(Relaxed),
            errors: s.errors.load(Relaxed),
            failing: s.failed.load(Relaxed) || s.incomplete.load(Relaxed),
        }
    }
}

/// GeoIP, lists, reverse DNS and the disabled-accounts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichmentView {
    /// The GeoIP and ASN databases.
    pub geoip: GeoIpView,
    /// The block and allow lists.
    pub lists: ListsView,
    /// Reverse DNS.
    pub rdns: RdnsView,
    /// The disabled-accounts file.
    pub disabled_accounts: DisabledView,
    /// The CrowdSec decisions (`[crowdsec]` with a bouncer key), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdsecView>,
}

impl EnrichmentView {
    fn of(e: &crate::engine::Enrichment) -> Self {
        EnrichmentView {
            crowdsec: e
                .crowdsec
                .enabled()
                .then(|| typed(e.crowdsec.status(), "crowdsec")),
            ..Self::from_parts(&e.geoip, &e.lists, &e.rdns, &e.disabled)
        }
    }

    fn from_parts(
        geoip: &GeoIp,
        lists: &IpLists,
        rdns: &Rdns,
        disabled: &DisabledAccounts,
    ) -> Self {
        EnrichmentView {
            geoip: typed(geoip.status(), "geoip"),
            lists: typed(lists.status(), "lists"),
            rdns: typed(rdns.status(), "rdns"),
            disabled_accounts: typed(disabled.status(), "disabled_accounts"),
            crowdsec: None,
        }
    }
}

/// The ban decisions read from a CrowdSec Local API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecView {
    /// Ban decisions kept (some may have ended since the last poll).
    pub decisions: u64,
    /// What a banned client gets: `defer` or `deny`.
    pub response: String,
    /// Requests from a banned address.
    pub hits: u64,
    /// Answers of the decision stream taken in.
    pub polls: u64,
    /// Polls that failed (the decisions known stayed in force).
    pub poll_errors: u64,
    /// Decisions added.
    pub added: u64,
    /// Decisions removed (deleted or ended).
    pub removed: u64,
    /// Decisions not kept (not a ban of an address or range).
    pub ignored: u64,
    /// The last answer taken in.
    pub last_poll: Option<String>,
    /// The last failure.
    pub last_error: Option<RefusalView>,
}

/// The GeoIP and ASN databases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoIpView {
    /// The City or Country database.
    pub city_db: Option<GeoIpDbView>,
    /// The ASN database.
    pub asn_db: Option<GeoIpDbView>,
    /// What lookups can tell.
    pub capabilities: CapabilitiesView,
    /// How often the files are checked for changes.
    pub reload_check_secs: u64,
}

/// What GeoIP lookups can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesView {
    /// Countries.
    pub country: bool,
    /// Coordinates.
    pub coordinates: bool,
    /// Autonomous systems.
    pub asn: bool,
}

/// One GeoIP database file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoIpDbView {
    /// The file.
    pub path: PathBuf,
    /// Its `database_type`.
    pub database_type: String,
    /// What it provides.
    pub provides: Vec<String>,
    /// When it was built.
    pub build_time: String,
    /// When it was loaded.
    pub loaded_at: String,
    /// 4 or 6.
    pub ip_version: u64,
    /// Its search tree's nodes.
    pub node_count: u64,
    /// Its size.
    pub size_bytes: u64,
    /// Lookups made.
    pub lookups: u64,
    /// Lookups that failed.
    pub lookup_errors: u64,
    /// Times it was reloaded.
    pub reloads: u64,
    /// Times a new file was refused.
    pub refusals: u64,
    /// The last refusal.
    pub last_refusal: Option<RefusalView>,
}

/// A file refused on reload (the one in use stays).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalView {
    /// When.
    pub at: String,
    /// Why.
    pub error: String,
}

/// The block and allow lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListsView {
    /// Networks blocked.
    pub block_networks: u64,
    /// Networks allowed.
    pub allow_networks: u64,
    /// Lookups that hit the block list.
    pub block_hits: u64,
    /// Lookups that hit the allow list.
    pub allow_hits: u64,
    /// How often the files are checked for changes.
    pub reload_check_secs: u64,
    /// Each file.
    pub files: Vec<ListFileView>,
}

/// One list file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFileView {
    /// The file.
    pub path: PathBuf,
    /// `block` or `allow`.
    pub kind: String,
    /// Its networks.
    pub networks: u64,
    /// Lines that are no network.
    pub bad_lines: u64,
    /// A few of them.
    pub bad_line_examples: Vec<String>,
    /// When it was loaded.
    pub loaded_at: String,
    /// Times it was reloaded.
    pub reloads: u64,
    /// The last refusal.
    pub last_refusal: Option<RefusalView>,
}

/// Reverse DNS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdnsView {
    /// Whether lookups are made.
    pub enabled: bool,
    /// Whether a name must resolve back to the address.
    pub forward_confirm: bool,
    /// A lookup's bound.
    pub timeout_ms: u64,
    /// Names cached.
    pub cached: u64,
    /// The cache's cap.
    pub cache_max: u64,
    /// Lookups waiting.
    pub pending: u64,
    /// Lookups asked for.
    pub requests: u64,
    /// Asked for while one was pending.
    pub duplicates: u64,
    /// Queued for the resolver.
    pub queued: u64,
    /// Dropped: the queue was full.
    pub dropped_queue_full: u64,
    /// Dropped: the resolver was gone.
    pub dropped_worker_gone: u64,
    /// Not asked again: the cached name was fresh.
    pub skipped_fresh: u64,
    /// Names found.
    pub names: u64,
    /// Names that did not resolve back.
    pub unconfirmed: u64,
    /// Addresses without a name.
    pub no_name: u64,
    /// Lookups that failed.
    pub failures: u64,
    /// Lookups that timed out.
    pub timeouts: u64,
    /// Cache entries evicted.
    pub evicted: u64,
}

/// The disabled-accounts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledView {
    /// The file, when configured.
    pub file: Option<PathBuf>,
    /// Accounts in it.
    pub accounts: u64,
    /// Lines that did not parse.
    pub bad_lines: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{Config, RawConfig};
    use crate::enrich::RdnsConfig;
    use crate::enrich::geoip::GeoIpConfig;
    use crate::enrich::lists::ListsConfig;

    /// Every component's status JSON reads into its typed form with nothing left over:
    /// a renamed or added field fails here instead of showing as a default in `ctl`.
    #[test]
    fn the_components_status_json_is_what_the_views_read() {
        fn same<T: serde::de::DeserializeOwned + Serialize>(v: serde_json::Value) {
            let typed: T =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"));
            assert_eq!(serde_json::to_value(&typed).unwrap(), v);
        }
        let dir = tempfile::tempdir().unwrap();
        let (city, asn) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
        geo_fixtures::write_city_db(&city).unwrap();
        geo_fixtures::write_asn_db(&asn).unwrap();
        let geo = GeoIp::open(&GeoIpConfig {
            city_db: Some(city),
            asn_db: Some(asn),
            ..GeoIpConfig::default()
        })
        .unwrap();
        same::<GeoIpView>(geo.status());
        same::<GeoIpView>(GeoIp::empty().status());
        let block = dir.path().join("drop.txt");
        std::fs::write(&block, "198.51.100.0/24 ; SBL1\nnot a network\n").unwrap();
        let lists = IpLists::open(&ListsConfig {
            block: vec![block],
            ..ListsConfig::default()
        })
        .unwrap();
        same::<ListsView>(lists.status());
        let accounts = dir.path().join("disabled");
        std::fs::write(&accounts, "olduser\n").unwrap();
        same::<DisabledView>(DisabledAccounts::open(&accounts, true).unwrap().status());
        same::<DisabledView>(DisabledAccounts::empty().status());
        let (rdns, _worker) = Rdns::new(&RdnsConfig {
            enabled: true,
            ..RdnsConfig::default()
        });
        same::<RdnsView>(rdns.status());
        let raw = RawConfig::default();
        let config = Config::from_raw(raw).unwrap();
        let (engine, _rx) = Engine::new(&config, Timestamp::UNIX_EPOCH);
        let trail = dir.path().join("audit");
        let audit = crate::audit::AuditConfig {
            enabled: true,
            dir: Some(trail),
            ..Default::default()
        };
        let _writer = engine.open_audit(&audit, dir.path(), false).unwrap();
        same::<AuditView>(engine.audit().unwrap().status());
    }
}
