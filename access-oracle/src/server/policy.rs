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
//! Every request must carry the API key ([`api_key`]); without it: 401, a warning with
//! the peer's address, a counter. A body that is not a JSON object: 400 with the reason.
//! Nothing a client sends can make the handler panic (the parser is fuzzed).
//!
//! Connections: accepted here (capped by `max_connections`, like the Exim socket), each
//! served by hyper's HTTP/1.1 connection (keep-alive; an idle or slow connection is closed
//! after [`HEADER_READ_TIMEOUT`]) with axum's router as the service. On shutdown, idle
//! connections close at once and busy ones after their current request.

pub mod api_key;
pub mod config;
pub mod request;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower_service::Service;

use crate::engine::Engine;
use crate::engine::UNKNOWN_PROTOCOL;
use crate::engine::policy::{PolicyAttempt, PolicySettings, PolicyVerdict};
use crate::protocol::Outcome;
use api_key::{ApiKey, Presented};
use config::PolicyConfig;
use request::PolicyRequest;

/// The largest request body read, in bytes; Dovecot's are a few hundred.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a connection may take to send a request's headers, and how long an idle
/// keep-alive connection stays open. Dovecot closes its idle ones after 10 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The reply to `report` and to an `allow` that lets the login go on.
const CONTINUE: &[u8] = br#"{"status":0,"msg":""}"#;

/// What every request handler shares.
pub struct Shared {
    engine: Arc<Engine>,
    key: ApiKey,
    settings: RwLock<Arc<PolicySettings>>,
}

impl Shared {
    /// The engine, the key and the decision settings.
    pub fn new(engine: Arc<Engine>, key: ApiKey, settings: PolicySettings) -> Shared {
        Shared {
            engine,
            key,
            settings: RwLock::new(Arc::new(settings)),
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

/// The router: `POST <path>`; anything else gets 404 or 405 from axum.
pub fn router(path: &str, shared: Arc<Shared>) -> Router {
    Router::new().route(path, post(handle)).with_state(shared)
}

/// A running endpoint, for the server's shutdown and reload.
pub struct Endpoint {
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<Arc<Semaphore>>,
    max_connections: usize,
}

impl Endpoint {
    /// What its handlers share (to change the settings on reload).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Waits (until `deadline`) for the accept loop to stop and for open connections to
    /// finish; returns whether they all did.
    pub async fn finish(self, deadline: tokio::time::Instant) -> bool {
        let Ok(slots) = self.task.await else {
            return false;
        };
        tokio::time::timeout_at(deadline, slots.acquire_many(self.max_connections as u32))
            .await
            .is_ok()
    }
}

/// Binds the endpoint of `config` (which must have `listen`), reads its key, and serves
/// until `shutdown` turns true.
pub async fn start(
    config: &PolicyConfig,
    engine: Arc<Engine>,
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
    let shared = Arc::new(Shared::new(engine, key, config.settings()));
    let app = router(&config.path, shared.clone());
    let task = tokio::spawn(serve(listener, app, config.max_connections, shutdown));
    tracing::info!(listen = %addr, path = %config.path, "dovecot policy endpoint listening");
    Ok(Endpoint {
        addr,
        shared,
        task,
        max_connections: config.max_connections,
    })
}

/// Accepts connections until `shutdown` turns true; returns the semaphore whose permits
/// are held by open connections, so the caller can wait for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) -> Arc<Semaphore> {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the policy endpoint");
                    // Typically EMFILE: give connections a moment to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            permit,
            shutdown.clone(),
        ));
    }
    slots
}

/// Serves one connection: HTTP/1.1 keep-alive, requests one after another.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    _permit: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "policy connection ended with an error");
                }
                break;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// One request.
async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let stats = &shared.engine.stats.policy;
    let (parts, body) = req.into_parts();
    match shared.key.check(&parts.headers) {
        Presented::Right => {}
        wrong => {
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %peer,
                header = shared.key.header(),
                key = if wrong == Presented::Missing { "missing" } else { "wrong" },
                "policy request refused: missing or wrong API key"
            );
            return error(StatusCode::UNAUTHORIZED, "missing or wrong API key");
        }
    }
    let command = match command(parts.uri.query()) {
        Ok(c) => c,
        Err(why) => return malformed(&shared, peer, StatusCode::BAD_REQUEST, &why),
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let why = format!("request body over {MAX_BODY_BYTES} bytes");
        return malformed(&shared, peer, StatusCode::PAYLOAD_TOO_LARGE, &why);
    }
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot read the request body: {e}");
            return malformed(&shared, peer, StatusCode::BAD_REQUEST, &why);
        }
    };
    let request = match request::parse(&bytes) {
        Ok(r) => r,
        Err(e) => return malformed(&shared, peer, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let now = Timestamp::now();
    match command {
        Command::Allow => {
            let settings = shared.settings();
            let verdict = shared.engine.policy_allow(
                request.login.as_deref().unwrap_or(""),
                request.remote,
                &settings,
                now,
            );
            log_verdict(&request, &verdict);
            json(verdict_json(&verdict))
        }
        Command::Report => report(&shared, &request, now, peer),
    }
}

/// Records a `report`.
fn report(shared: &Shared, r: &PolicyRequest, now: Timestamp, peer: SocketAddr) -> Response {
    let stats = &shared.engine.stats.policy;
    let Some(success) = r.success else {
        return malformed(
            shared,
            peer,
            StatusCode::BAD_REQUEST,
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
            },
            now,
        );
    } else {
        stats.report_anonymous.fetch_add(1, Ordering::Relaxed);
    }
    json(Bytes::from_static(CONTINUE))
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
pub fn verdict_json(v: &PolicyVerdict) -> Bytes {
    match v {
        PolicyVerdict::Continue => Bytes::from_static(CONTINUE),
        PolicyVerdict::Tarpit { secs, failures } => Bytes::from(format!(
            r#"{{"status":{secs},"msg":"tarpit after {failures} failed logins"}}"#
        )),
        PolicyVerdict::Reject { message, .. } => Bytes::from(
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

fn json(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    let mut response = json(Bytes::from(body));
    *response.status_mut() = status;
    response
}

fn malformed(shared: &Shared, peer: SocketAddr, status: StatusCode, why: &str) -> Response {
    shared
        .engine
        .stats
        .policy
        .malformed
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %peer, status = status.as_u16(), reason = why, "malformed policy request");
    error(status, why)
}

#[cfg(test)]
mod tests;
