//! `type = "syslog"`: each alert as an RFC 5424 message to a syslog receiver (rsyslog,
//! syslog-ng, a SIEM's collector), over UDP, TCP or TLS; with `stream = "audit"`, every
//! record of the audit trail the same way.
//!
//! ```toml
//! [[sinks]]
//! name = "siem"
//! type = "syslog"
//! address = "siem.example.org:6514"   # host:port; IPv6 as "[2001:db8::1]:6514"
//! transport = "tls"                   # udp | tcp | tls
//! ca_file = "/etc/access-oracle/siem-ca.pem"       # default: the system's CAs
//! cert_file = "/etc/access-oracle/client.pem"      # optional client certificate ...
//! key_file = "/etc/access-oracle/client.key"       # ... and its key (both or neither)
//! server_name = "siem.example.org"    # the name the certificate must carry; default the host
//! facility = "auth"
//! app_name = "exim-access"
//! hostname = "mx1.example.org"        # default: this machine's name
//! format = "text"                     # MSG: text (the headline) | json | ecs
//! timeout_ms = 5000
//! retries = 2
//! ```
//!
//! One alert is one message ([`rfc5424`]): the rule as MSGID, the alert's fields as
//! structured data (`[alert@32473 rule="..." severity="..." account="..." ip="..."
//! ...]`), the one-line headline as MSG. [`transport`] sends it: a datagram (cut to
//! 2048 bytes, counted and logged), or an octet-counted frame on one persistent TCP or
//! TLS connection, connected again after a failure with a backoff. Connecting and each
//! write have `timeout_ms`; a failed message is tried `retries` more times, then counted
//! failed. The sink holds only its own queue: a receiver that is down or hung (accepts,
//! never reads) makes its writes time out and its queue fill and drop by `when_full`,
//! never a verdict or another sink.
//!
//! With `stream = "audit"` each record is one message, in the trail's order: MSGID its
//! kind (`auth`, `sent`, `alert`, ...), structured data `[audit@32473 seq="..."
//! kind="..." user="..." ip="..." ...]` with its main fields and `chain` (unique per
//! record: a receiver deduplicates on it), MSG the record's JSON line (`format = "ecs"`:
//! its ECS document). A record counts as delivered once it is written and flushed to
//! the connection (for UDP: sent); the forwarder stops at the first that is not.

pub mod rfc5424;
pub mod transport;

use std::cell::Cell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};

use self::rfc5424::{Element, Facility, Level, Message};
use self::transport::{Endpoint, Link, MAX_DATAGRAM, Transport};
use super::{AuditItem, BuildContext, Delivery, Forward, Forwarding, Outcome, Sink, SinkConfig};
use crate::alert::Alert;
use crate::audit::Record;
use crate::ratelog::{self, Log};

/// The SD-ID of an alert's structured data. 32473 is the private enterprise number
/// RFC 5612 reserves for documentation.
pub const ALERT_SD_ID: &str = "alert@32473";
/// The SD-ID of an audit record's structured data.
pub const AUDIT_SD_ID: &str = "audit@32473";

/// What MSG holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The alert's headline (an audit record, which has none, as its JSON line).
    #[default]
    Text,
    /// The alert as `alerts.jsonl` holds it; an audit record's line as the trail holds
    /// it.
    Json,
    /// The Elastic Common Schema document ([`super::ecs`]).
    Ecs,
}

/// `[[sinks]] type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// The receiver, `host:port`; an IPv6 address in brackets (`[2001:db8::1]:6514`).
    /// The name is resolved at each connection.
    pub address: String,
    /// `udp` (one datagram per message, RFC 5426), `tcp` (octet counting, RFC 6587) or
    /// `tls` (octet counting over TLS, RFC 5425).
    pub transport: Transport,
    /// TLS: a PEM file of the CA certificates to trust; by default the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: a PEM client certificate (chain) to present; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// TLS: the client certificate's PEM private key; with `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// TLS: the name the receiver's certificate must carry; by default the host part
    /// of `address` (a name or an IP address).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The syslog facility: `kern`, `user`, `mail`, `daemon`, `auth` (default),
    /// `syslog`, `lpr`, `news`, `uucp`, `cron`, `authpriv`, `ftp`, `local0` .. `local7`.
    #[serde(default)]
    pub facility: Facility,
    /// APP-NAME: 1 to 48 printable ASCII characters; default `exim-access`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// HOSTNAME: 1 to 255 printable ASCII characters; default this machine's name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// MSG: `text` (default: the alert's headline), `json` (the alert as in
    /// `alerts.jsonl`) or `ecs` (its Elastic Common Schema document). For `stream =
    /// "audit"`: the record's JSON line (`text`, `json`) or its ECS document (`ecs`).
    #[serde(default)]
    pub format: Format,
    /// How long connecting and each write may take, in milliseconds; default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// More tries after a failed message (the connection made again after a pause
    /// doubling from 1 s); default 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_app_name() -> String {
    "exim-access".into()
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_retries() -> u32 {
    2
}

/// The longest `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 600_000;

impl SyslogConfig {
    /// The name the TLS server's certificate must carry.
    fn server_name(&self) -> Option<&str> {
        self.server_name
            .as_deref()
            .or_else(|| transport::split_address(&self.address).map(|(host, _)| host))
    }

    /// The TLS client, read from the files named.
    fn tls(&self) -> Result<Option<(tokio_rustls::TlsConnector, ServerName<'static>)>, String> {
        if self.transport != Transport::Tls {
            return Ok(None);
        }
        let client = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let config = transport::client_config(self.ca_file.as_deref(), client)?;
        let name = self.server_name().unwrap_or_default();
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("server_name {name:?} is not a host name or an IP address"))?;
        Ok(Some((config.into(), name)))
    }

    /// The link to the receiver and the message header, for an alert sink or a
    /// forwarder.
    fn sender(&self) -> std::io::Result<Sender> {
        let tls = self.tls().map_err(std::io::Error::other)?;
        let endpoint = Endpoint {
            address: self.address.clone(),
            transport: self.transport,
            tls,
        };
        let hostname = match &self.hostname {
            Some(h) => h.clone(),
            None => machine_name(),
        };
        Ok(Sender {
            link: Link::new(endpoint, Duration::from_millis(self.timeout_ms)),
            header: Header {
                facility: self.facility,
                hostname,
                app_name: self.app_name.clone(),
                procid: std::process::id(),
            },
            format: self.format,
            retries: self.retries,
            truncated: Cell::new(0),
            cut_warning: ratelog::Warning::new(ratelog::PERIOD),
        })
    }
}

/// This machine's name as a HOSTNAME (`-`, the nil value, when it cannot be read).
fn machine_name() -> String {
    match dns_lookup::get_hostname() {
        Ok(name) => rfc5424::header_field(&name, rfc5424::MAX_HOSTNAME),
        Err(e) => {
            tracing::warn!(error = %e, "syslog sink: this machine's name cannot be read; HOSTNAME is \"-\" (set hostname)");
            "-".into()
        }
    }
}

impl SinkConfig for SyslogConfig {
    fn validate(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        match transport::split_address(&self.address) {
            None => problems.push(format!(
                "address must be host:port (an IPv6 address in brackets: \"[2001:db8::1]:6514\"), got {:?}",
                crate::text::escape_controls(&self.address)
            )),
            Some((host, _)) => {
                let name_ok = host.parse::<IpAddr>().is_ok()
                    || (host.len() <= 253
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
                if !name_ok {
                    problems.push(format!(
                        "address's host {:?} is not a host name or an IP address",
                        crate::text::escape_controls(host)
                    ));
                }
            }
        }
        if self.transport != Transport::Tls {
            let tls_keys: Vec<&str> = [
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
                ("server_name", self.server_name.is_some()),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| key)
            .collect();
            if !tls_keys.is_empty() {
                problems.push(format!(
                    "{} only apply to transport = \"tls\", not {:?}",
                    tls_keys.join(", "),
                    self.transport.as_str()
                ));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(
                "cert_file and key_file go together: a client certificate needs its key".into(),
            );
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = path {
                super::absolute(key, path, problems);
            }
        }
        if let Some(name) = &self.server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!(
                    "server_name {:?} is not a host name or an IP address",
                    crate::text::escape_controls(name)
                ));
            }
        }
        if !rfc5424::is_header_field(&self.app_name, rfc5424::MAX_APP_NAME) {
            problems.push(format!(
                "app_name must be 1 to {} printable ASCII characters without spaces, got {:?}",
                rfc5424::MAX_APP_NAME,
                crate::text::escape_controls(&self.app_name)
            ));
        }
        if let Some(h) = &self.hostname {
            if !rfc5424::is_header_field(h, rfc5424::MAX_HOSTNAME) {
                problems.push(format!(
                    "hostname must be 1 to {} printable ASCII characters without spaces, got {:?}",
                    rfc5424::MAX_HOSTNAME,
                    crate::text::escape_controls(h)
                ));
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
        if self.retries > 10 {
            problems.push(format!("retries must be at most 10, got {}", self.retries));
        }
    }

    fn target(&self, _ctx: &BuildContext) -> String {
        format!("{}://{}", self.transport.as_str(), self.address)
    }

    /// Reads the TLS files (CA, client certificate and key) as the sink will.
    fn preflight(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        if let Err(e) = self.tls() {
            problems.push(e);
        }
    }

    fn build(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>> {
        Ok(Box::new(SyslogSink {
            sender: self.sender()?,
        }))
    }

    fn forwards_audit(&self) -> bool {
        true
    }

    fn build_forwarder(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Forward>> {
        Ok(Box::new(SyslogForwarder {
            sender: self.sender()?,
        }))
    }
}

/// The header fields every message of a sink shares.
#[derive(Debug, Clone)]
struct Header {
    facility: Facility,
    hostname: String,
    app_name: String,
    procid: u32,
}

impl Header {
    fn message<'a>(
        &'a self,
        level: Level,
        time: jiff::Timestamp,
        msgid: &'a str,
        data: Element,
        msg: &'a str,
    ) -> Message<'a> {
        Message {
            facility: self.facility,
            level,
            time,
            hostname: &self.hostname,
            app_name: &self.app_name,
            procid: self.procid,
            msgid,
            data,
            msg,
        }
    }
}

/// A value as its JSON string (`"hold_account"` → `hold_account`).
fn word<T: Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// An alert's structured data.
pub fn alert_data(alert: &Alert) -> Element {
    let mut sd = Element::new(ALERT_SD_ID);
    sd.param("rule", alert.rule)
        .param("severity", alert.severity.as_str())
        .opt("account", alert.account.as_deref())
        .opt("ip", alert.ip)
        .opt("rdns", alert.rdns.as_deref())
        .opt("protocol", alert.protocol.as_deref())
        .param("count", alert.count.to_string())
        .param("threshold", alert.threshold.to_string())
        .param("window_secs", alert.window_secs.to_string())
        .param("response", alert.response.as_str())
        .param("expires", rfc5424::timestamp(alert.expires));
    if let Some(g) = &alert.group {
        sd.param("group_count", g.count.to_string())
            .param("group_first", rfc5424::timestamp(g.first))
            .param("group_last", rfc5424::timestamp(g.last));
    }
    if let Some(undo) = alert.context.as_ref().and_then(|c| c.undo.as_deref()) {
        sd.param("undo", undo);
    }
    sd
}

/// An audit record's structured data: its main fields and the line's chain value.
pub fn record_data(record: &Record, line: &str) -> Element {
    let mut sd = Element::new(AUDIT_SD_ID);
    sd.param("seq", record.seq.to_string())
        .param("kind", record.kind.as_str())
        .opt("source", word(&record.source))
        .opt("user", record.user.as_deref())
        .opt("ip", record.ip)
        .opt("protocol", record.protocol.as_deref())
        .opt("result", record.result.as_ref().and_then(word))
        .opt("verdict", record.verdict.as_deref())
        .opt("rule", record.rule.as_deref())
        .opt("severity", record.severity.map(|s| s.as_str()))
        .opt("response", record.response.map(|r| r.as_str()))
        .opt("until", record.until.map(rfc5424::timestamp))
        .opt("action", record.action.as_deref())
        .opt("admin", record.admin.as_deref())
        .opt("msgid", record.msgid.as_deref())
        .opt("rcpts", record.rcpts);
    if let Ok(sealed) = crate::audit::record::unseal(line) {
        sd.param("chain", crate::audit::record::chain_hex(&sealed.chain));
    }
    sd
}

/// The syslog severity of an audit record: an alert's own; a failed login or a refusal
/// `notice`; anything else `info`.
fn record_level(record: &Record) -> Level {
    if let Some(s) = record.severity {
        return s.into();
    }
    let refused = matches!(record.verdict.as_deref(), Some("defer" | "deny"));
    if refused || record.result == Some(crate::protocol::Outcome::Fail) {
        Level::Notice
    } else {
        Level::Info
    }
}

/// Turns alerts and records into messages and sends them over the link.
#[derive(Debug)]
struct Sender {
    link: Link,
    header: Header,
    format: Format,
    retries: u32,
    /// Datagrams cut to [`MAX_DATAGRAM`] so far.
    truncated: Cell<u64>,
    cut_warning: ratelog::Warning<()>,
}

impl Sender {
    /// An alert's message bytes.
    fn alert_bytes(&self, alert: &Alert) -> Vec<u8> {
        let msg = match self.format {
            Format::Text => rfc5424::text_msg(&alert.headline()).into_owned(),
            Format::Json => match serde_json::to_string(alert) {
                Ok(json) => rfc5424::json_msg(&json).into_owned(),
                Err(_) => rfc5424::text_msg(&alert.headline()).into_owned(),
            },
            Format::Ecs => rfc5424::json_msg(&super::ecs::alert(alert).to_string()).into_owned(),
        };
        let message = self.header.message(
            alert.severity.into(),
            alert.time,
            alert.rule,
            alert_data(alert),
            &msg,
        );
        self.bytes(&message)
    }

    /// An audit record's message bytes.
    fn record_bytes(&self, item: &AuditItem) -> Vec<u8> {
        let msg = match self.format {
            Format::Text | Format::Json => rfc5424::json_msg(item.line.trim_end()).into_owned(),
            Format::Ecs => rfc5424::json_msg(&super::ecs::item(item).to_string()).into_owned(),
        };
        let record = &item.record;
        let message = self.header.message(
            record_level(record),
            record.time,
            record.kind.as_str(),
            record_data(record, &item.line),
            &msg,
        );
        self.bytes(&message)
    }

    /// The bytes of `message`, cut to a datagram's size for UDP (counted and logged).
    fn bytes(&self, message: &Message<'_>) -> Vec<u8> {
        if self.link.transport() != Transport::Udp {
            return message.to_bytes();
        }
        let (bytes, cut) = message.to_bytes_within(MAX_DATAGRAM);
        if cut {
            self.truncated.set(self.truncated.get() + 1);
            if let Log::Now { held_back } = self.cut_warning.hit(Instant::now(), ()) {
                tracing::warn!(
                    receiver = %self.link.endpoint(),
                    truncated_total = self.truncated.get(),
                    held_back,
                    max_bytes = MAX_DATAGRAM,
                    "syslog sink: a message was longer than a datagram and was cut"
                );
            }
        }
        bytes
    }
}

/// The running syslog sink (alerts).
#[derive(Debug)]
pub struct SyslogSink {
    sender: Sender,
}

impl Sink for SyslogSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            let mut outcome = Outcome::default();
            for alert in batch {
                let bytes = self.sender.alert_bytes(alert);
                let mut tries = 0;
                loop {
                    match self.sender.link.send(&bytes).await {
                        Ok(()) => {
                            outcome.delivered += 1;
                            break;
                        }
                        Err(e) if tries < self.sender.retries => {
                            tracing::warn!(receiver = %self.sender.link.endpoint(), error = %e,
                                "syslog sink: the alert did not go; trying again");
                            tries += 1;
                            outcome.retried += 1;
                        }
                        Err(e) => {
                            tracing::error!(receiver = %self.sender.link.endpoint(), error = %e, rule = alert.rule,
                                "syslog sink: the alert did not go; not delivered");
                            outcome.failed += 1;
                            break;
                        }
                    }
                }
            }
            outcome
        })
    }
}

/// The running syslog forwarder (`stream = "audit"`).
#[derive(Debug)]
pub struct SyslogForwarder {
    sender: Sender,
}

impl Forward for SyslogForwarder {
    fn forward<'a>(&'a mut self, batch: &'a [AuditItem]) -> Forwarding<'a> {
        Box::pin(async move {
            for (done, item) in batch.iter().enumerate() {
                let bytes = self.sender.record_bytes(item);
                if let Err(e) = self.sender.link.send(&bytes).await {
                    tracing::warn!(receiver = %self.sender.link.endpoint(), error = %e, seq = item.record.seq,
                        "syslog sink: an audit record did not go; it is offered again later");
                    return done;
                }
            }
            batch.len()
        })
    }
}

#[cfg(test)]
mod tests;
