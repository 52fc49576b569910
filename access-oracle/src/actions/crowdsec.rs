//! `[crowdsec]`: the oracle and a CrowdSec Local API (LAPI), both ways.
//!
//! * **Bouncer** (`bouncer_key_file`): a task polls the LAPI's decision stream
//!   (`GET /v1/decisions/stream`, `X-Api-Key`) every `poll_secs` and keeps its ban
//!   decisions on addresses and ranges in [`crate::enrich::crowdsec::Decisions`], which
//!   the gate reads: a banned client is refused at connect, at AUTH and in Dovecot's
//!   `allow`, like a listed one, until its decision is deleted or ends. The first call
//!   (and the first after a failed one) asks for every decision in force
//!   (`startup=true`), the others for what changed. When the LAPI cannot be reached the
//!   decisions already known stay in force until their own end; the failure is logged
//!   and counted in `ctl status`.
//! * **Push** (`machine_id`, `password_file`): an [`Action`]: each address block the
//!   oracle makes becomes an alert with one ban decision on the LAPI
//!   (`POST /v1/alerts`, logged in as a machine with `POST /v1/watchers/login`), so the
//!   firewall bouncers of every host that asks the same LAPI ban the address too. The
//!   decision's duration is the block's remaining time (CrowdSec ends it itself); an
//!   unblock deletes the decisions this machine made on that network
//!   (`GET /v1/alerts`, `DELETE /v1/decisions/{id}`), leaving other decisions on it.
//!
//! ```toml
//! [crowdsec]
//! lapi_url = "http://127.0.0.1:8080"
//! bouncer_key_file = "/etc/access-oracle/crowdsec-bouncer.key"  # cscli bouncers add
//! machine_id = "exim-access"                                    # cscli machines add
//! password_file = "/etc/access-oracle/crowdsec-machine.yaml"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::header::HeaderValue;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Action, ActionConfig, Applying, Step};
use crate::enrich::crowdsec::{Decisions, Stream};
use crate::time::Secs;

/// The scenario of every decision the oracle pushes starts with this, then the rule.
pub const SCENARIO_PREFIX: &str = "exim-access/";

/// The most read of a key or password file.
const SECRET_LIMIT: crate::files::Limit = crate::files::Limit {
    what: "a CrowdSec key or password file",
    max_bytes: 4096,
    why: "a key is a line",
};

/// The most read of one answer of the decision stream: 64 MiB (the first answer lists
/// every decision in force, the Central API's community list included, a few MiB).
const MAX_STREAM_BYTES: usize = 64 << 20;

/// The most read of any other answer.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The longest `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 120_000;

/// What a banned client gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BanResponse {
    /// A temporary failure (4xx): the client may try later.
    #[default]
    Defer,
    /// A permanent failure (5xx).
    Deny,
}

/// `[crowdsec]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrowdsecConfig {
    /// The Local API: `http://127.0.0.1:8080` (Debian's default) or an `https://` URL.
    pub lapi_url: String,
    /// The bouncer's API key (`cscli bouncers add exim-access -o raw`), alone in a file
    /// not readable by every local user. With it the oracle refuses the addresses and
    /// ranges CrowdSec bans.
    pub bouncer_key_file: Option<PathBuf>,
    /// How often the decision stream is asked, in seconds (1 to 3600).
    pub poll_secs: u64,
    /// A PEM file of CA certificates to trust besides the system's roots, for an
    /// `https://` LAPI with a private CA.
    pub ca_file: Option<PathBuf>,
    /// One request to the LAPI, connection and TLS included, in milliseconds.
    pub timeout_ms: u64,
    /// What a banned client gets: `defer` (default) or `deny`.
    pub response: BanResponse,
    /// The machine the oracle logs in as to push its own blocks
    /// (`cscli machines add exim-access --auto -f FILE`); with `password_file`.
    pub machine_id: Option<String>,
    /// The machine's password, alone in a file or as the credentials file `cscli
    /// machines add -f` writes (`login:`, `password:`); not readable by every local user.
    pub password_file: Option<PathBuf>,
}

impl Default for CrowdsecConfig {
    fn default() -> Self {
        CrowdsecConfig {
            lapi_url: "http://127.0.0.1:8080".into(),
            bouncer_key_file: None,
            poll_secs: 10,
            ca_file: None,
            timeout_ms: 10_000,
            response: BanResponse::Defer,
            machine_id: None,
            password_file: None,
        }
    }
}

impl CrowdsecConfig {
    /// Whether the oracle pushes its blocks (a machine is configured): then `[crowdsec]`
    /// is one of the actions.
    pub fn pushes(&self) -> bool {
        self.machine_id.is_some() || self.password_file.is_some()
    }

    /// The table of decisions the bouncer fills, answering as `response` says; without
    /// `bouncer_key_file`, a table that stays empty and is not shown.
    pub fn decisions(&self) -> Decisions {
        if self.bouncer_key_file.is_none() {
            return Decisions::default();
        }
        Decisions::new(self.response == BanResponse::Deny)
    }

    fn url(&self) -> Result<Url, String> {
        let url = Url::parse(&self.lapi_url).map_err(|e| {
            format!(
                "lapi_url {:?} is not a URL ({e})",
                crate::text::escape_controls(&self.lapi_url)
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "lapi_url must start with http:// or https://, got {}",
                url.scheme()
            ));
        }
        if url.host().is_none() {
            return Err("lapi_url has no host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("lapi_url must not have a query or a fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "lapi_url must not carry a user or password (bouncer_key_file and password_file do)"
                    .into(),
            );
        }
        Ok(url)
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        let timeout = Duration::from_millis(self.timeout_ms);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("exim-access/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &self.ca_file {
            for cert in crate::files::read_ca_certs(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| {
            format!(
                "cannot set up the HTTP client: {}",
                crate::text::error_chain(&e)
            )
        })
    }
}

impl ActionConfig for CrowdsecConfig {
    fn name(&self) -> &'static str {
        "crowdsec"
    }

    fn validate(&self, problems: &mut Vec<String>) {
        let url = match self.url() {
            Ok(u) => Some(u),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        if self.bouncer_key_file.is_none() && !self.pushes() {
            problems.push(
                "nothing to do: set bouncer_key_file (refuse the addresses CrowdSec bans) \
                 and/or machine_id and password_file (push the oracle's blocks)"
                    .into(),
            );
        }
        match (&self.machine_id, &self.password_file) {
            (Some(_), None) => problems.push("machine_id needs password_file".into()),
            (None, Some(_)) => problems.push("password_file needs machine_id".into()),
            _ => {}
        }
        if let Some(id) = &self.machine_id
            && (id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()))
        {
            problems.push(format!(
                "machine_id must be 1 to 128 printable ASCII characters without spaces, got {:?}",
                crate::text::escape_controls(id)
            ));
        }
        if self.poll_secs == 0 || self.poll_secs > 3600 {
            problems.push(format!(
                "poll_secs must be between 1 and 3600, got {}",
                self.poll_secs
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
        for (key, path) in [
            ("bouncer_key_file", &self.bouncer_key_file),
            ("ca_file", &self.ca_file),
            ("password_file", &self.password_file),
        ] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                problems.push(format!(
                    "{key} must be an absolute path, got {}",
                    path.display()
                ));
            }
        }
        if self.ca_file.is_some() && url.as_ref().is_some_and(|u| u.scheme() != "https") {
            problems.push("ca_file is for an https:// lapi_url".into());
        }
    }

    fn preflight(&self, problems: &mut Vec<String>) {
        if let Some(path) = &self.bouncer_key_file
            && let Err(e) = read_secret("bouncer_key_file", path)
        {
            problems.push(e);
        }
        if let Some(path) = &self.ca_file
            && let Err(e) = crate::files::read_ca_certs(path)
        {
            problems.push(e);
        }
        if let (Some(id), Some(path)) = (&self.machine_id, &self.password_file)
            && let Err(e) = read_password(path, id)
        {
            problems.push(e);
        }
    }

    fn build(&self) -> std::io::Result<Box<dyn Action>> {
        Ok(Box::new(Push::new(self).map_err(std::io::Error::other)?))
    }
}

/// Reads a secret file: not readable by everyone, one printable line.
fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    let shown = path.display();
    let bytes = crate::files::read_secret_file(key, path, SECRET_LIMIT)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{key} {shown} is not text"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{key} {shown} is empty"));
    }
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "{key} {shown} must hold one line of printable ASCII"
        ));
    }
    Ok(text.to_string())
}

/// Reads the machine's password: the file alone, or the `password:` of the credentials
/// file `cscli machines add -f` writes (whose `login:` must then be `machine_id`).
fn read_password(path: &Path, machine_id: &str) -> Result<String, String> {
    let shown = path.display();
    let bytes = crate::files::read_secret_file("password_file", path, SECRET_LIMIT)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("password_file {shown} is not text"))?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let v = l.trim().strip_prefix(name)?.strip_prefix(':')?.trim();
            Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
        })
    };
    let password = match field("password") {
        Some(p) => {
            if let Some(login) = field("login")
                && login != machine_id
            {
                return Err(format!(
                    "password_file {shown} holds the credentials of machine {:?}, not machine_id {machine_id:?}",
                    crate::text::escape_controls(&login)
                ));
            }
            p
        }
        None => text.trim().to_string(),
    };
    if password.is_empty() {
        return Err(format!("password_file {shown} holds no password"));
    }
    if password.contains(['\n', '\r']) {
        return Err(format!(
            "password_file {shown} must hold the password alone on one line, or cscli's credentials file"
        ));
    }
    Ok(password)
}

/// `path` under the LAPI's URL (which may have a path of its own, behind a proxy).
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// An HTTP failure in words: what was asked, and the status with the first bytes of the
/// answer, or why there was none.
fn failure(what: &str, status: StatusCode, body: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    format!(
        "{what}: {status} {}",
        crate::text::escape_controls(shown.trim())
    )
}

/// Sends `request` and reads its answer up to `max` bytes.
async fn exchange(
    request: reqwest::RequestBuilder,
    max: usize,
    timeout: Duration,
) -> Result<(StatusCode, Vec<u8>), String> {
    let mut answer = match request.send().await {
        Ok(a) => a,
        Err(e) if e.is_timeout() => {
            return Err(format!("no answer within {} ms", timeout.as_millis()));
        }
        Err(e) => return Err(crate::text::error_chain(&e)),
    };
    let status = answer.status();
    let mut body = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(format!("the answer is longer than {max} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "the answer did not end within {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(crate::text::error_chain(&e)),
        }
    }
    Ok((status, body))
}

/// The bouncer: polls the decision stream into the table.
pub struct Bouncer {
    client: reqwest::Client,
    stream: Url,
    key: HeaderValue,
    poll: Duration,
    timeout: Duration,
    table: Arc<Decisions>,
}

impl Bouncer {
    /// The bouncer of `config` (which has `bouncer_key_file`), filling `table`.
    pub fn new(config: &CrowdsecConfig, table: Arc<Decisions>) -> Result<Bouncer, String> {
        let path = config
            .bouncer_key_file
            .as_ref()
            .ok_or("no bouncer_key_file")?;
        let mut key = HeaderValue::from_str(&read_secret("bouncer_key_file", path)?)
            .map_err(|_| "bouncer_key_file: not a header value".to_string())?;
        key.set_sensitive(true);
        Ok(Bouncer {
            client: config.client()?,
            stream: endpoint(&config.url()?, "v1/decisions/stream"),
            key,
            poll: Duration::from_secs(config.poll_secs.max(1)),
            timeout: Duration::from_millis(config.timeout_ms),
            table,
        })
    }

    /// Polls until `stop` turns true: at once, then every `poll_secs`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut full = true;
        let mut failing: Option<(String, tokio::time::Instant)> = None;
        tracing::info!(lapi = %self.stream, every_secs = self.poll.as_secs(),
            "crowdsec: polling the Local API's decisions");
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            tokio::select! {
                _ = ticks.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() { return; }
                    continue;
                }
            }
            let polled = tokio::select! {
                r = self.poll_once(full) => r,
                _ = stop.changed() => return,
            };
            match polled {
                Ok(applied) => {
                    if failing.take().is_some() {
                        tracing::info!("crowdsec: the Local API answers again");
                    }
                    if applied.added > 0 || applied.removed > 0 {
                        tracing::info!(
                            added = applied.added,
                            removed = applied.removed,
                            ignored = applied.ignored,
                            in_force = applied.in_force,
                            full,
                            "crowdsec: decisions updated"
                        );
                    }
                    full = false;
                }
                Err(e) => {
                    self.table.poll_failed(&e, now());
                    // The first failure, a new one, and the same one once a minute.
                    let quiet = failing.as_ref().is_some_and(|(last, at)| {
                        *last == e && at.elapsed() < crate::ratelog::PERIOD
                    });
                    if !quiet {
                        tracing::warn!(error = %e, in_force = self.table.len(),
                            "crowdsec: cannot read the decision stream; the decisions known stay in force until their end");
                        failing = Some((e, tokio::time::Instant::now()));
                    }
                    full = true;
                }
            }
        }
    }

    /// One call of the stream, applied to the table.
    async fn poll_once(&self, full: bool) -> Result<crate::enrich::crowdsec::Applied, String> {
        let mut url = self.stream.clone();
        url.query_pairs_mut()
            .append_pair("startup", if full { "true" } else { "false" })
            .append_pair("scopes", "ip,range");
        let request = self.client.get(url).header("X-Api-Key", self.key.clone());
        let (status, body) = exchange(request, MAX_STREAM_BYTES, self.timeout).await?;
        if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            return Err(failure(
                "the Local API refused the bouncer key (cscli bouncers list)",
                status,
                &body,
            ));
        }
        if !status.is_success() {
            return Err(failure("the decision stream", status, &body));
        }
        // A long list is parsed and indexed off the runtime's threads.
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || {
            let stream = Stream::parse(&body)?;
            Ok(table.apply(&stream, full, now()))
        })
        .await
        .map_err(|e| format!("reading the decision stream stopped: {e}"))?
    }
}

/// Starts the bouncer of `config` filling `table`, when it has `bouncer_key_file`.
pub fn start_bouncer(
    config: Option<&CrowdsecConfig>,
    table: Arc<Decisions>,
    stop: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, String> {
    match config {
        Some(c) if c.bouncer_key_file.is_some() => {
            let bouncer = Bouncer::new(c, table)?;
            Ok(Some(tokio::spawn(bouncer.run(stop))))
        }
        _ => Ok(None),
    }
}

/// The wall clock in whole seconds.
fn now() -> Secs {
    jiff::Timestamp::now().as_second()
}

/// The push: the oracle's blocks as alerts with decisions on the LAPI.
pub struct Push {
    client: reqwest::Client,
    base: Url,
    machine_id: String,
    password: String,
    /// The token and until when it is used.
    token: Option<(String, Secs)>,
    timeout: Duration,
}

impl Push {
    /// The push of `config` (which has `machine_id` and `password_file`).
    pub fn new(config: &CrowdsecConfig) -> Result<Push, String> {
        let (Some(machine_id), Some(path)) = (&config.machine_id, &config.password_file) else {
            return Err("[crowdsec] pushes blocks only with machine_id and password_file".into());
        };
        Ok(Push {
            client: config.client()?,
            base: config.url()?,
            machine_id: machine_id.clone(),
            password: read_password(path, machine_id)?,
            token: None,
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }

    /// Logs in, keeping the token until a minute before it expires.
    async fn login(&mut self, now: Secs) -> Result<String, String> {
        let body = json!({
            "machine_id": self.machine_id,
            "password": self.password,
            "scenarios": [],
        });
        let request = self
            .client
            .post(endpoint(&self.base, "v1/watchers/login"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let (status, answer) = exchange(request, MAX_ANSWER_BYTES, self.timeout).await?;
        if !status.is_success() {
            return Err(failure(
                &format!("logging in as machine {}", self.machine_id),
                status,
                &answer,
            ));
        }
        #[derive(Deserialize)]
        struct Login {
            token: String,
            #[serde(default)]
            expire: Option<String>,
        }
        let login: Login = serde_json::from_slice(&answer)
            .map_err(|e| format!("the login answer is not what it should be: {e}"))?;
        let expires = login
            .expire
            .as_deref()
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .map_or(now + 600, |t| t.as_second());
        let until = (expires - 60).max(now + 1);
        self.token = Some((login.token.clone(), until));
        Ok(login.token)
    }

    /// Sends what `make` builds with a token; logs in first when there is none, and
    /// once more when the LAPI no longer takes the one kept.
    async fn send(
        &mut self,
        now: Secs,
        max: usize,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let mut fresh = false;
        let token = match &self.token {
            Some((t, until)) if *until > now => t.clone(),
            _ => {
                fresh = true;
                self.login(now).await?
            }
        };
        let answer = exchange(make(&self.client, &token), max, self.timeout).await?;
        if answer.0 != StatusCode::UNAUTHORIZED || fresh {
            return Ok(answer);
        }
        self.token = None;
        let token = self.login(now).await?;
        exchange(make(&self.client, &token), max, self.timeout).await
    }

    async fn block(
        &mut self,
        net: IpNet,
        until: Secs,
        by: &str,
        reason: &str,
        now: Secs,
    ) -> Result<(), String> {
        let left = until - now;
        if left <= 0 {
            // Over already: nothing to tell.
            return Ok(());
        }
        let body = alert_body(net, left, by, reason, now).to_string();
        let url = endpoint(&self.base, "v1/alerts");
        let (status, answer) = self
            .send(now, MAX_ANSWER_BYTES, |client, token| {
                client
                    .post(url.clone())
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        if !status.is_success() {
            return Err(failure("pushing the alert", status, &answer));
        }
        Ok(())
    }

    async fn unblock(&mut self, net: IpNet, now: Secs) -> Result<(), String> {
        let (scope, value) = scope_value(net);
        let mut url = endpoint(&self.base, "v1/alerts");
        url.query_pairs_mut()
            .append_pair("scope", scope)
            .append_pair("value", &value)
            .append_pair("has_active_decision", "true")
            .append_pair("limit", "1000");
        let (status, answer) = self
            .send(now, MAX_ANSWER_BYTES, |client, token| {
                client.get(url.clone()).bearer_auth(token)
            })
            .await?;
        if !status.is_success() {
            return Err(failure("finding the decisions to delete", status, &answer));
        }
        let ids = own_decisions(&answer, &self.machine_id, &value)?;
        for id in ids {
            let url = endpoint(&self.base, &format!("v1/decisions/{id}"));
            let (status, answer) = self
                .send(now, MAX_ANSWER_BYTES, |client, token| {
                    client.delete(url.clone()).bearer_auth(token)
                })
                .await?;
            if !status.is_success() {
                return Err(failure(&format!("deleting decision {id}"), status, &answer));
            }
        }
        Ok(())
    }
}

impl Action for Push {
    fn apply<'a>(&'a mut self, step: &'a Step, now: Secs) -> Applying<'a> {
        Box::pin(async move {
            match step {
                Step::Block {
                    net,
                    until,
                    by,
                    reason,
                } => self.block(*net, *until, by, reason, now).await,
                Step::Unblock { net } => self.unblock(*net, now).await,
            }
        })
    }

    fn expires_by_itself(&self) -> bool {
        true
    }
}

/// The LAPI's scope and value for a network: `Ip` and the address for one address,
/// else `Range` and the CIDR.
pub fn scope_value(net: IpNet) -> (&'static str, String) {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        ("Ip", net.addr().to_string())
    } else {
        ("Range", net.to_string())
    }
}

/// The scenario of a block made by `by`: `exim-access/<rule>` for a rule (a name of
/// lower-case letters, digits and `_`), `exim-access/admin` for an administrator's
/// (`by` names the caller then, `uid 0 (root)`: the alert's message keeps it).
pub fn scenario(by: &str) -> String {
    let rule = !by.is_empty()
        && by.len() <= 64
        && by
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    format!("{SCENARIO_PREFIX}{}", if rule { by } else { "admin" })
}

/// The alert pushed for a block of `net` for `left` seconds from `now`.
pub fn alert_body(net: IpNet, left: Secs, by: &str, reason: &str, now: Secs) -> serde_json::Value {
    let (scope, value) = scope_value(net);
    let scenario = scenario(by);
    let at = crate::time::rfc3339(now);
    let reason: String = crate::text::escape_controls(reason)
        .chars()
        .take(500)
        .collect();
    let mut source = json!({ "scope": scope, "value": value });
    source[if scope == "Ip" { "ip" } else { "range" }] = json!(value);
    json!([{
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": "",
        "message": format!(
            "exim-access blocked {value} ({}): {reason}",
            crate::text::escape_controls(by)
        ),
        "events_count": 1,
        "start_at": at,
        "stop_at": at,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": false,
        "remediation": true,
        "source": source,
        "events": [],
        "decisions": [{
            "duration": format!("{left}s"),
            // What the LAPI calls decisions of its machines' scenarios: `cscli
            // decisions list` shows only these and cscli's without --all.
            "origin": "crowdsec",
            "scenario": scenario,
            "scope": scope,
            "type": "ban",
            "value": value,
            "simulated": false,
        }],
    }])
}

/// The ids of the decisions on `value` in force in an answer of `GET /v1/alerts` that
/// this machine pushed.
pub fn own_decisions(answer: &[u8], machine_id: &str, value: &str) -> Result<Vec<i64>, String> {
    #[derive(Deserialize)]
    struct Alert {
        #[serde(default)]
        machine_id: Option<String>,
        #[serde(default)]
        decisions: Option<Vec<crate::enrich::crowdsec::StreamDecision>>,
    }
    let alerts: Option<Vec<Alert>> = serde_json::from_slice(answer)
        .map_err(|e| format!("the alerts' answer is not what it should be: {e}"))?;
    let mut ids: Vec<i64> = alerts
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.machine_id.as_deref() == Some(machine_id))
        .flat_map(|a| a.decisions.unwrap_or_default())
        .filter(|d| {
            d.scenario
                .as_deref()
                .is_some_and(|s| s.starts_with(SCENARIO_PREFIX))
                && d.value.as_deref() == Some(value)
                && !d.duration.as_deref().unwrap_or("").starts_with('-')
        })
        .map(|d| d.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests;
