//! `type = "webhook"`: each alert POSTed over HTTP(S), in the body a receiver reads:
//! the alert as `alerts.jsonl` holds it (`json`), a chat message (`slack`, also
//! Mattermost and Rocket.Chat), a Microsoft Teams Workflows card (`teams`), a push
//! (`ntfy`, `gotify`), a Splunk HEC event (`splunk_hec`) or an ECS document (`ecs`);
//! the bodies are in [`format`].
//!
//! ```toml
//! [[sinks]]
//! name = "siem"
//! type = "webhook"
//! url = "https://siem.example.org:8088/services/collector/event"
//! format = "splunk_hec"
//! headers = { Authorization = "Splunk 6f1c0d7e-...." }
//! ca_file = "/etc/access-oracle/siem-ca.pem"    # a private CA, beside the system's
//! secret_file = "/etc/access-oracle/webhook.secret"
//! timeout_ms = 5000     # one request, connection and TLS included
//! retries = 2           # more tries after a failure, 1 s then 2 s apart
//! ```
//!
//! Every request carries `X-Access-Delivery: <32 hex digits>`, one id per notification,
//! the same on each retry of it (an audit record's id is its chain value), so a
//! receiver drops what it already has; with `secret_file`, also
//! `X-Access-Signature: sha256=<hex HMAC-SHA256 of the body under the secret>`.
//!
//! A 2xx answer delivered the alert. A 5xx, 408 or 429, a connection that fails or a
//! request past `timeout_ms` is tried again after a pause (1 s, doubling) up to
//! `retries` times, then the alert failed; any other answer (4xx, a redirect, which is
//! never followed) failed it at once: trying again would get the same. Each failure is
//! logged with the status and the first bytes of the answer, escaped. The URL is logged
//! and shown without its query and user info, where tokens live, and for `slack` and
//! `ntfy`, whose URL path is itself the secret, by a fingerprint.
//!
//! One request runs at a time per sink, each bounded by `timeout_ms`: a slow or hung
//! receiver holds this sink's queue only, never a verdict or another sink. With
//! `stream = "audit"` (formats `json`, `splunk_hec`, `ecs`) the sink forwards each audit
//! record instead, in order, stopping at the first it cannot deliver.
//!
//! TLS is rustls with the system's root certificates (and `ca_file`'s); a proxy named
//! by `https_proxy` / `http_proxy` in the oracle's environment is used.

pub mod format;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{AuditItem, BuildContext, Delivery, Forward, Forwarding, Outcome, Sink, SinkConfig};
use crate::alert::Alert;
pub use format::{Format, Payload};

/// `[[sinks]] type = "webhook"`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST: an `http://` or `https://` URL. A token in its query or user info
    /// is sent but never logged or shown.
    pub url: String,
    /// The body: `json` (default), `slack`, `teams`, `ntfy`, `gotify`, `splunk_hec` or
    /// `ecs`.
    #[serde(default)]
    pub format: Format,
    /// Extra request headers, e.g. `{ Authorization = "Splunk <token>" }` or
    /// `{ "X-Gotify-Key" = "<token>" }`. Values are printable ASCII.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A PEM file of CA certificates to trust besides the system's roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding the shared secret (leading and trailing white space, such as a
    /// final newline, is not part of it): each request is signed with
    /// `X-Access-Signature: sha256=<hex HMAC-SHA256 of the body>`. The file must not be
    /// readable by every local user.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// How long one request may take, in milliseconds (connection, TLS, answer);
    /// default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// More tries after a failure that may pass (5xx, 408, 429, no connection, a
    /// timeout), each after a pause doubling from 1 s; default 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

impl std::fmt::Debug for WebhookConfig {
    // Header values (tokens) and the URL (tokens in its query or path) are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &shown_url(&self.url, self.format))
            .field("format", &self.format)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("ca_file", &self.ca_file)
            .field("secret_file", &self.secret_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .finish()
    }
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_retries() -> u32 {
    2
}

/// The longest a request may be given.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// The most retries.
const MAX_RETRIES: u32 = 10;

/// Headers the sink sets itself (or HTTP does), which `headers` may not name.
const OWN_HEADERS: [&str; 6] = [
    "x-access-signature",
    "x-access-delivery",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Access-Signature";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "X-Access-Delivery";

const SECRET_LIMIT: crate::files::Limit = crate::files::Limit {
    what: "a webhook secret",
    max_bytes: 4096,
    why: "a shared secret is a few dozen bytes",
};


/// How much of a refusing answer is read and logged.
const ANSWER_SHOWN: usize = 200;

impl SinkConfig for WebhookConfig {
    fn validate(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        match reqwest::Url::parse(&self.url) {
            Err(e) => problems.push(format!("url is not a URL ({e})")),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(format!(
                "url must start with http:// or https://, got {}:",
                url.scheme()
            )),
            Ok(_) => {}
        }
        for (name, value) in &self.headers {
            let shown = crate::text::escape_controls(name);
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!(
                    "headers: {shown:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
                ));
            } else if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problems.push(format!(
                    "headers: {shown} is set by the sink itself and cannot be configured"
                ));
            }
            if !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                problems.push(format!(
                    "headers.{shown}: the value must be printable ASCII (no line breaks or other control characters)"
                ));
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
        if self.retries > MAX_RETRIES {
            problems.push(format!(
                "retries must be at most {MAX_RETRIES}, got {}",
                self.retries
            ));
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("secret_file", &self.secret_file),
        ] {
            if let Some(path) = path {
                super::absolute(key, path, problems);
            }
        }
    }

    fn target(&self, _ctx: &BuildContext) -> String {
        shown_url(&self.url, self.format)
    }

    fn preflight(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        if let Some(path) = &self.ca_file
            && let Err(e) = crate::files::read_ca_certs(path)
        {
            problems.push(e);
        }
        if let Some(path) = &self.secret_file
            && let Err(e) = read_secret(path)
        {
            problems.push(e);
        }
    }

    fn build(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>> {
        Ok(Box::new(WebhookSink {
            poster: Poster::new(self)?,
            format: self.format,
        }))
    }

    fn forwards_audit(&self) -> bool {
        self.format.forwards_audit()
    }

    fn build_forwarder(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Forward>> {
        if !self.format.forwards_audit() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "format = {:?} cannot forward the audit trail (json, splunk_hec and ecs can)",
                    self.format.name()
                ),
            ));
        }
        Ok(Box::new(WebhookForwarder {
            poster: Poster::new(self)?,
            format: self.format,
        }))
    }
}

/// The URL as logs and `ctl status` show it: no user info, query or fragment; for the
/// formats whose URL path is the secret itself (a Slack or Mattermost hook, an ntfy
/// topic) the path is replaced by a fingerprint of the whole URL, which still tells two
/// hooks apart.
pub fn shown_url(url: &str, format: Format) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        // Not a URL (validate says so): at most its scheme and host part.
        let cut = url.find(['?', '#']).unwrap_or(url.len());
        let head = &url[..cut];
        let head = match head.find('@') {
            Some(at) => &head[at + 1..],
            None => head,
        };
        return crate::text::escape_controls(head).into_owned();
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    if matches!(format, Format::Slack | Format::Ntfy) && u.path() != "/" {
        let print = hex::encode(&Sha256::digest(url.as_bytes())[..4]);
        u.set_path("/");
        return format!("{u}\u{2026} (url {print})");
    }
    u.to_string()
}

/// Reads `secret_file`: not readable by everyone, not empty.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = crate::files::read_secret_file("secret_file", path, SECRET_LIMIT)?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(format!("secret_file {} is empty", path.display()));
    }
    Ok(secret.to_vec())
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A new delivery id: 128 random bits as 32 hex digits (the time and a counter if the
/// system has no randomness to give).
pub fn delivery_id() -> String {
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id[..8].copy_from_slice(&nanos.to_be_bytes());
        id[8..].copy_from_slice(
            &(COUNTER.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id()) << 32)
                .to_be_bytes(),
        );
    }
    hex::encode(id)
}

/// An audit record's delivery id: its chain value (unique in the trail, the same each
/// time the record is sent), else a digest of its line.
fn record_id(item: &AuditItem) -> String {
    match crate::audit::record::unseal(&item.line) {
        Ok(sealed) => crate::audit::record::chain_hex(&sealed.chain),
        Err(_) => hex::encode(&Sha256::digest(item.line.as_bytes())[..16]),
    }
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// Delivered (2xx).
    Delivered,
    /// Failed, and another try may pass.
    Retry(String),
    /// Failed for good.
    Refused(String),
}

/// Whether an answer's status is worth another try: server errors, a request timeout,
/// too many requests.
fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// The HTTP client and what every request carries.
struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL as logged.
    shown: String,
    headers: HeaderMap,
    secret: Option<Vec<u8>>,
    retries: u32,
    timeout: Duration,
    /// The name Splunk events carry.
    host: String,
}

impl Poster {
    fn new(config: &WebhookConfig) -> std::io::Result<Poster> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| invalid(format!("url is not a URL ({e})")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("headers: {name:?} is not a header name")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("headers.{name}: not printable ASCII")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("exim-access/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            for cert in crate::files::read_ca_certs(path).map_err(invalid)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let secret = match &config.secret_file {
            Some(path) => Some(read_secret(path).map_err(invalid)?),
            None => None,
        };
        let client = builder.build().map_err(|e| {
            std::io::Error::other(format!("cannot set up the HTTP client: {}", crate::text::error_chain(&e)))
        })?;
        Ok(Poster {
            client,
            shown: shown_url(&config.url, config.format),
            url,
            headers,
            secret,
            retries: config.retries,
            timeout,
            host: dns_lookup::get_hostname().unwrap_or_else(|_| "localhost".into()),
        })
    }

    /// One request.
    async fn attempt(&self, payload: &Payload, id: &str) -> Attempt {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static(payload.content_type),
        );
        for (name, value) in &payload.headers {
            // The format's own values are ASCII by construction; one that is not is
            // left out rather than sent broken.
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(*name, v);
            }
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Ok(v) = HeaderValue::from_str(id) {
            headers.insert(DELIVERY_HEADER, v);
        }
        if let Some(secret) = &self.secret
            && let Ok(v) = HeaderValue::from_str(&signature(secret, &payload.body))
        {
            headers.insert(SIGNATURE_HEADER, v);
        }
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(payload.body.clone())
            .send()
            .await;
        let mut answer = match sent {
            Ok(a) => a,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(format!("no answer within {} ms", self.timeout.as_millis()));
            }
            Err(e) => return Attempt::Retry(crate::text::error_chain(&e.without_url())),
        };
        let status = answer.status();
        // Read a little of the answer: shown when refused, and a connection whose
        // answer was read to its end is kept for the next request.
        let mut text = Vec::new();
        while text.len() < 4096 {
            match answer.chunk().await {
                Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            return Attempt::Delivered;
        }
        let shown = String::from_utf8_lossy(&text[..text.len().min(ANSWER_SHOWN)]).into_owned();
        let shown = crate::text::escape_controls(shown.trim());
        let why = if status.is_redirection() {
            let to = answer
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(|l| shown_url(l, Format::Json))
                .unwrap_or_default();
            format!("answered {status}, a redirect to {to:?} (not followed)")
        } else if shown.is_empty() {
            format!("answered {status}")
        } else {
            format!("answered {status}: {shown}")
        };
        if retryable(status) {
            Attempt::Retry(why)
        } else {
            Attempt::Refused(why)
        }
    }

    /// Sends `payload` under delivery id `id` until delivered, refused or out of
    /// retries. Returns whether it was delivered and how many retries it took.
    async fn send(&self, payload: &Payload, id: &str, what: &str) -> (bool, u64) {
        let mut pause = Duration::from_secs(1);
        let mut retried = 0;
        loop {
            match self.attempt(payload, id).await {
                Attempt::Delivered => return (true, retried),
                Attempt::Retry(why) if retried < u64::from(self.retries) => {
                    tracing::warn!(url = %self.shown, delivery = id, error = %why,
                        retry_in_secs = pause.as_secs(), "webhook sink: {what} not delivered");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    retried += 1;
                }
                Attempt::Retry(why) | Attempt::Refused(why) => {
                    tracing::error!(url = %self.shown, delivery = id, error = %why,
                        tries = retried + 1, "webhook sink: {what} not delivered; given up");
                    return (false, retried);
                }
            }
        }
    }
}

/// The running webhook sink.
pub struct WebhookSink {
    poster: Poster,
    format: Format,
}

impl Sink for WebhookSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            let mut outcome = Outcome::default();
            for alert in batch {
                let payload = match self.format.alert(alert, &self.poster.host) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, rule = alert.rule,
                            "webhook sink: the alert does not serialize");
                        outcome.failed += 1;
                        continue;
                    }
                };
                let id = delivery_id();
                let (delivered, retried) = self.poster.send(&payload, &id, "alert").await;
                outcome.retried += retried;
                if delivered {
                    outcome.delivered += 1;
                } else {
                    outcome.failed += 1;
                }
            }
            outcome
        })
    }
}

/// The running webhook sink of a `stream = "audit"` table.
pub struct WebhookForwarder {
    poster: Poster,
    format: Format,
}

impl Forward for WebhookForwarder {
    fn forward<'a>(&'a mut self, batch: &'a [AuditItem]) -> Forwarding<'a> {
        Box::pin(async move {
            for (done, item) in batch.iter().enumerate() {
                let payload = match self.format.record(item, &self.poster.host) {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        tracing::error!(error = %e, seq = item.record.seq,
                            "webhook sink: the audit record does not serialize");
                        return done;
                    }
                    None => return done,
                };
                let (delivered, _) = self
                    .poster
                    .send(&payload, &record_id(item), "audit record")
                    .await;
                if !delivered {
                    return done;
                }
            }
            batch.len()
        })
    }
}

#[cfg(test)]
mod tests;
