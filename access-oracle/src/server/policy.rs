//! The Dovecot auth policy endpoint: `POST <path>?command=allow|report` over HTTP/1.1
//! keep-alive, JSON in and out (DESIGN section 4, `docs/DOVECOT.md`).
//!
//! * `allow`: the engine's [`Engine::policy_allow`] answers `{"status":0,"msg":""}`
//!   (continue), `{"status":N,...}` (tarpit N seconds) or `{"status":-1,"msg":"<text>"}`
//!   (refuse; Dovecot shows the text to the client).
//! * `report`: the outcome of an attempt, recorded by [`Engine::policy_report`] like an
//!   `auth` / `login` request on the Exim socket; answered `{"status":0,"msg":""}` (Dovecot
//!   ignores it).
//!
//! Every request must carry the API key ([`api_key`]); without it: 401, a counter
//! (every one) and a warning with the peer's address (the first, then at most one a
//! minute saying how many more: [`crate::ratelog`]). A body that is not a JSON object: 400 with the reason.
//! Nothing a client sends can make the handler panic (the parser is fuzzed).
//!
//! Connections: accepted and served by [`http`] (HTTP/1.1 keep-alive on `httparse`,
//! capped by `max_connections` and `max_connections_per_ip`, idle ones shed first; a
//! head, a request and an idle wait each have their deadline: [`http::Limits`]); this
//! file is the [`http::Handler`] behind it. On shutdown, idle connections close at once
//! and busy ones after their current request.

pub mod api_key;
pub mod http;
pub mod request;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::policy::PolicyConfig;
use crate::engine::Engine;
use crate::engine::UNKNOWN_PROTOCOL;
use crate::engine::policy::{PolicyAttempt, PolicySettings, PolicyVerdict};
use crate::protocol::Outcome;
use crate::ratelog::{Log, Warning};
use crate::server::accept::{Listeners, Slots};
use api_key::{ApiKey, Presented};
use http::{Reply, Request, Status};
use request::PolicyRequest;

pub use http::{HEADER_READ_TIMEOUT, Limits, MAX_BODY_BYTES};

/// The reply to `report` and to an `allow` that lets the login go on.
const CONTINUE: &[u8] = br#"{"status":0,"msg":""}"#;

/// What every request handler shares.
pub struct Shared {
    engine: Arc<Engine>,
    key: ApiKey,
    settings: RwLock<Arc<PolicySettings>>,
    /// Requests without the right key: logged the first time, then summed up.
    wrong_key: Warning<IpAddr>,
}

impl Shared {
    /// The engine, the key and the decision settings.
    pub fn new(engine: Arc<Engine>, key: ApiKey, settings: PolicySettings) -> Shared {
        Shared {
            engine,
            key,
            settings: RwLock::new(Arc::new(settings)),
            wrong_key: Warning::new(crate::ratelog::PERIOD),
        }
    }

    /// Replaces the decision settings (on reload).
    pub fn set_settings(&self, settings: PolicySettings) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }

    fn settings(&self) -> Arc<PolicySettings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The command in the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Allow,
    Report,
}

/// A running endpoint, for the server's shutdown and reload.
pub struct Endpoint {
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    slots: Arc<Slots>,
}

impl Endpoint {
    /// What its handlers share (to change the settings on reload).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Waits (until `deadline`) for the accept loop to stop and for open connections to
    /// finish; returns whether they all did.
    pub async fn finish(self, deadline: tokio::time::Instant) -> bool {
        if self.task.await.is_err() {
            return false;
        }
        tokio::time::timeout_at(deadline, self.slots.closed())
            .await
            .is_ok()
    }
}

/// Binds the endpoint of `config` (which must have `listen`), reads its key, and serves
/// until `shutdown` turns true, counting its connections in `stats.policy`.
pub async fn start(
    config: &PolicyConfig,
    engine: Arc<Engine>,
    stats: Arc<Listeners>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Endpoint> {
    let addr = config
        .listen_addr()
        .context("policy.listen is not set or not an address")?;
    let key = config.load_key().map_err(anyhow::Error::msg)?;
    let key = ApiKey::new(&config.api_key_header, &key).map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (policy.listen)"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    let shared = Arc::new(Shared::new(engine, key, PolicySettings::from(config)));
    let limits = http::Limits::from(config);
    let slots = http::slots(limits, stats);
    let task = tokio::spawn(http::serve_counted(
        listener,
        config.path.as_str().into(),
        shared.clone(),
        limits,
        slots.clone(),
        shutdown,
    ));
    tracing::info!(listen = %addr, path = %config.path, "dovecot policy endpoint listening");
    Ok(Endpoint {
        addr,
        shared,
        task,
        slots,
    })
}

/// Accepts connections until `shutdown` turns true and answers `POST <path>` on them
/// within `limits`; returns the slots of the open connections, so the caller can wait
/// for them.
pub async fn serve(
    listener: TcpListener,
    path: Arc<str>,
    shared: Arc<Shared>,
    limits: impl Into<Limits>,
    shutdown: watch::Receiver<bool>,
) -> Arc<Slots> {
    http::serve(listener, path, shared, limits, shutdown).await
}

impl http::Handler for Shared {
    fn handle(&self, req: &Request<'_>, peer: SocketAddr) -> Reply {
        let stats = &self.engine.stats.policy;
        match self.key.check(req.header(self.key.header())) {
            Presented::Right => {}
            wrong => {
                stats.unauthorized.fetch_add(1, Ordering::Relaxed);
                if let Log::Now { held_back } =
                    self.wrong_key.hit(std::time::Instant::now(), peer.ip())
                {
                    tracing::warn!(
                        peer = %peer,
                        header = self.key.header(),
                        key = if wrong == Presented::Missing { "missing" } else { "wrong" },
                        held_back,
                        "policy request refused: missing or wrong API key (held_back: more since the last such line, not logged)"
                    );
                }
                return Reply::error(Status::Unauthorized, "missing or wrong API key");
            }
        }
        let command = match command(req.query) {
            Ok(c) => c,
            Err(why) => return malformed(self, peer, Status::BadRequest, &why),
        };
        let request = match request::parse(req.body) {
            Ok(r) => r,
            Err(e) => return malformed(self, peer, Status::BadRequest, &e.to_string()),
        };
        let now = Timestamp::now();
        match command {
            Command::Allow => {
                let settings = self.settings();
                let verdict = self.engine.policy_allow(
                    request.login.as_deref().unwrap_or(""),
                    request.remote,
                    request.protocol.as_deref(),
                    &settings,
                    now,
                );
                log_verdict(&request, &verdict);
                Reply::json(verdict_json(&verdict))
            }
            Command::Report => report(self, &request, now, peer),
        }
    }

    /// A request the HTTP layer refused (unreadable head, body over the limit) is
    /// counted and logged like a malformed body.
    fn refused(&self, peer: SocketAddr, status: Status, why: &str) {
        count_malformed(self, peer, status, why);
    }

    /// The wrong keys not logged in the last minute, summed up in one line.
    fn tick(&self) {
        if let Some(s) = self.wrong_key.summary(std::time::Instant::now()) {
            tracing::warn!(
                held_back = s.held_back,
                last_peer = ?s.last,
                "policy request refused: {} more missing or wrong API keys in the last {} s (the last from {})",
                s.held_back,
                s.over.as_secs(),
                s.last.map_or_else(|| "?".to_string(), |ip| ip.to_string()),
            );
        }
    }
}

/// Records a `report`.
fn report(shared: &Shared, r: &PolicyRequest, now: Timestamp, peer: SocketAddr) -> Reply {
    let stats = &shared.engine.stats.policy;
    let Some(success) = r.success else {
        return malformed(
            shared,
            peer,
            Status::BadRequest,
            "malformed policy request: a report needs `success` (true or false)",
        );
    };
    let fail_type = r.fail_type.as_deref();
    if r.policy_reject == Some(true) || fail_type == Some("policy") {
        // Refused by this policy before any password check: not a wrong password.
        stats.report_refused.fetch_add(1, Ordering::Relaxed);
    } else if !success && fail_type == Some("internal") {
        // Dovecot 2.4: the password database failed; says nothing about the password.
        stats.report_internal.fetch_add(1, Ordering::Relaxed);
    } else if let Some(login) = r.login.as_deref() {
        shared.engine.policy_report(
            &PolicyAttempt {
                user: login,
                ip: r.remote,
                protocol: r.protocol.as_deref().unwrap_or(UNKNOWN_PROTOCOL),
                pwhash: r.pwhash,
                session: r.session_id.as_deref(),
                result: if success { Outcome::Ok } else { Outcome::Fail },
                mech: r.mech.as_deref(),
                port: r.rport,
                tls: r.tls,
                client: r.device_id.as_deref(),
            },
            now,
        );
    } else {
        stats.report_anonymous.fetch_add(1, Ordering::Relaxed);
    }
    Reply::json(CONTINUE)
}

/// The `command` of the query string (`command=allow` or `command=report`, possibly among
/// other parameters: Dovecot appends `command=...` to a URL that ends with `&`).
fn command(query: Option<&str>) -> Result<Command, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("command="));
    match value {
        Some("allow") => Ok(Command::Allow),
        Some("report") => Ok(Command::Report),
        Some(other) => Err(format!(
            "unknown command {:?}: expected allow or report",
            other.chars().take(40).collect::<String>()
        )),
        None => {
            Err("no command in the query string: expected ?command=allow or ?command=report".into())
        }
    }
}

/// The JSON answer to `allow` for a verdict.
pub fn verdict_json(v: &PolicyVerdict) -> Cow<'static, [u8]> {
    match v {
        PolicyVerdict::Continue => Cow::Borrowed(CONTINUE),
        PolicyVerdict::Tarpit { secs, failures } => Cow::Owned(
            format!(r#"{{"status":{secs},"msg":"tarpit after {failures} failed logins"}}"#)
                .into_bytes(),
        ),
        PolicyVerdict::Reject { message, .. } => Cow::Owned(
            serde_json::to_vec(&serde_json::json!({ "status": -1, "msg": &**message }))
                .unwrap_or_else(|_| br#"{"status":-1,"msg":""}"#.to_vec()),
        ),
    }
}

fn log_verdict(r: &PolicyRequest, v: &PolicyVerdict) {
    match v {
        PolicyVerdict::Continue => {}
        PolicyVerdict::Tarpit { secs, failures } => tracing::debug!(
            login = r.login.as_deref().unwrap_or(""), remote = ?r.remote,
            protocol = r.protocol.as_deref().unwrap_or(""), secs, failures,
            "dovecot login tarpitted"
        ),
        PolicyVerdict::Reject { rule, .. } => tracing::debug!(
            login = r.login.as_deref().unwrap_or(""), remote = ?r.remote,
            protocol = r.protocol.as_deref().unwrap_or(""), rule,
            "dovecot login refused"
        ),
    }
}

/// Counts and logs a malformed request, and answers it with the reason.
fn malformed(shared: &Shared, peer: SocketAddr, status: Status, why: &str) -> Reply {
    count_malformed(shared, peer, status, why);
    Reply::error(status, why)
}

fn count_malformed(shared: &Shared, peer: SocketAddr, status: Status, why: &str) {
    shared
        .engine
        .stats
        .policy
        .malformed
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %peer, status = status.code(), reason = why, "malformed policy request");
}

#[cfg(test)]
mod tests;
