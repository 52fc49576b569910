//! The admin socket: JSON requests from `access-oracle ctl`, with roles checked against
//! the peer's Unix credentials (`SO_PEERCRED`) on every request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use nix::unistd::{Gid, Uid, User};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::accept::{self, Expired, Listeners, Refusal, Slot, Slots, Watched, WhenFull};
use crate::audit::{Kind, Record, Source};

use crate::admin::views::{self, View};
use crate::admin::{AdminRequest, Role};
use crate::config::{Config, Roles};
use crate::engine::Engine;

/// The longest admin request accepted, in bytes.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// What the admin handlers need besides the engine.
pub struct AdminContext {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Roles, resolved at start.
    pub roles: Roles,
    /// Shown by `status`.
    pub config_source: String,
    /// Shown by `status`.
    pub exim_socket: String,
    /// The listeners' counters, shown by `status`.
    pub listeners: Arc<Listeners>,
    /// Admin connections at once at most.
    pub max_connections: usize,
}

impl AdminContext {
    /// Builds the context from the running config.
    pub fn new(
        engine: Arc<Engine>,
        config: &Config,
        config_source: String,
        listeners: Arc<Listeners>,
    ) -> Self {
        AdminContext {
            engine,
            roles: config.roles.clone(),
            config_source,
            exim_socket: config.exim_socket.path.display().to_string(),
            listeners,
            max_connections: config.raw.server.admin_max_connections,
        }
    }
}

/// The admin socket's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a connection may wait for its next request.
    pub idle: Duration,
    /// How long a begun request line may take to be ended.
    pub request: Duration,
}

/// Accepts admin connections until shutdown. At the cap (`admin_max_connections`), the
/// connection idle the longest is closed to make room; when none is, the newcomer is
/// answered `{"ok":false,...}` and closed. Every refusal (over the cap, a role too low,
/// a timeout) is logged, counted and written to the audit trail.
pub async fn serve(
    listener: UnixListener,
    ctx: Arc<AdminContext>,
    slots: Arc<Slots>,
    timeouts: Timeouts,
    shutdown: watch::Receiver<bool>,
) {
    let listener = &listener;
    let max = ctx.max_connections;
    accept::serve(
        slots,
        WhenFull::Refuse,
        shutdown,
        move || async move { listener.accept().await.map(|(s, _)| (s, None)) },
        |stream, slot| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = connection(stream, &ctx, &slot, timeouts).await {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        },
        |stream, _: Refusal| {
            let reason = format!("over the cap of {max} admin connections, none idle");
            if let Ok(cred) = stream.peer_cred() {
                refused_to_audit(&ctx, Uid::from_raw(cred.uid()), "connect", &reason);
            }
            let reply = json!({ "ok": false, "error": format!("{reason}; try again") });
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            // A new connection's send buffer is empty: the line goes out whole.
            let _ = stream.try_write(&out);
        },
        || {},
    )
    .await;
}

/// Writes a refusal on the admin socket to the audit trail: who (`uid 1000 (alice)`),
/// what they asked (`request`), why it was refused.
fn refused_to_audit(ctx: &AdminContext, uid: Uid, request: &str, reason: &str) {
    if let Some(audit) = ctx.engine.audit() {
        let mut record = Record::new(Kind::Admin, Source::Admin, Timestamp::now());
        record.action = Some("refused".into());
        record.admin = Some(peer_name(uid).into());
        record.verdict = Some("refused".into());
        record.reason = Some(format!("{request}: {reason}"));
        audit.record(record);
    }
}

/// The peer's role, or `None` when it has none.
fn role_of(roles: &Roles, uid: Uid, gid: Gid) -> Option<Role> {
    let name = || User::from_uid(uid).ok().flatten().map(|u| u.name);
    let in_groups = |groups: &[(Gid, Vec<String>)]| {
        groups
            .iter()
            .any(|(g, members)| *g == gid || name().is_some_and(|n| members.contains(&n)))
    };
    if uid.is_root() || roles.admin_uids.contains(&uid) || in_groups(&roles.admin_groups) {
        Some(Role::Admin)
    } else if roles.auditor_uids.contains(&uid) || in_groups(&roles.auditor_groups) {
        Some(Role::Auditor)
    } else {
        None
    }
}

async fn connection(
    stream: UnixStream,
    ctx: &AdminContext,
    slot: &Slot,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (uid, gid) = (Uid::from_raw(cred.uid()), Gid::from_raw(cred.gid()));
    let role = role_of(&ctx.roles, uid, gid);
    let (rd, mut wr) = stream.into_split();
    let rd = Watched::new(rd, slot.conn().clone(), timeouts.idle, timeouts.request);
    let mut lines = BufReader::new(rd.take(MAX_REQUEST_BYTES)).lines();
    let signal = slot.conn().signalled();
    let mut signal = std::pin::pin!(signal);
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            () = signal.as_mut() => return Ok(()),
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e) => {
                let why = match accept::expired(&e) {
                    Some(Expired::Request) => {
                        slot.slots()
                            .request_timeout("an admin request", None, timeouts.request);
                        format!(
                            "request not complete within {} ms",
                            timeouts.request.as_millis()
                        )
                    }
                    Some(Expired::Idle) => {
                        slot.slots().idle_timeout();
                        format!("idle for {} s", timeouts.idle.as_secs())
                    }
                    Some(Expired::Shed) => "closed to make room for another connection".into(),
                    None => return Err(e),
                };
                refused_to_audit(ctx, uid, "connection", &why);
                let reply = json!({ "ok": false, "error": why });
                let mut out = serde_json::to_vec(&reply).unwrap_or_default();
                out.push(b'\n');
                let _ = wr.write_all(&out).await;
                return Ok(());
            }
        };
        let response = match serde_json::from_str::<AdminRequest>(&line) {
            Err(e) => json!({ "ok": false, "error": format!("bad request: {e}") }),
            Ok(req) if role.is_none_or(|r| r < req.required_role()) => {
                ctx.engine
                    .stats
                    .admin_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(uid = uid.as_raw(), gid = gid.as_raw(), request = req.name(),
                    role = ?role, "admin request refused");
                let why = format!("needs the {:?} role", req.required_role());
                refused_to_audit(ctx, uid, req.name(), &why);
                json!({ "ok": false, "error": format!(
                    "permission denied: uid {} may not {} (needs the {:?} role)",
                    uid, req.name(), req.required_role()) })
            }
            Ok(req) if req.problem().is_some() => {
                json!({ "ok": false, "error": req.problem() })
            }
            Ok(req) => {
                if req.required_role() == Role::Admin {
                    tracing::info!(uid = uid.as_raw(), request = ?req, "admin change");
                }
                let by = peer_name(uid);
                json!({ "ok": true, "data": execute(ctx, &req, Timestamp::now(), &by) })
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
}

/// The peer as the audit trail names it: `uid 1000 (alice)`.
fn peer_name(uid: Uid) -> String {
    match User::from_uid(uid).ok().flatten() {
        Some(u) => format!("uid {uid} ({})", u.name),
        None => format!("uid {uid}"),
    }
}

fn execute(ctx: &AdminContext, req: &AdminRequest, now: Timestamp, by: &str) -> View {
    let engine = &ctx.engine;
    match req {
        AdminRequest::Status => {
            let l = ctx.listeners.snapshot();
            let server = views::ServerFacts {
                config: ctx.config_source.clone(),
                exim_socket: ctx.exim_socket.clone(),
                listeners: views::ListenersView::new(&l.exim, &l.policy, &l.admin),
            };
            View::Status(Box::new(views::status(engine, now, server)))
        }
        AdminRequest::Account {
            user,
            baseline: false,
        } => View::Account(Box::new(views::account(engine, user, now))),
        AdminRequest::Account {
            user,
            baseline: true,
        } => View::Baseline(Box::new(views::baseline(engine, user, now))),
        AdminRequest::Alerts { limit } => View::Alerts(views::alerts(engine, *limit)),
        AdminRequest::Release { user } => View::Release(views::release(engine, user, now, by)),
        AdminRequest::Unblock { ip } => View::Unblock(views::unblock(engine, ip.0, now, by)),
        AdminRequest::Hold {
            user,
            for_secs,
            reason,
        } => View::Hold(views::hold(
            engine,
            user,
            for_secs.unwrap_or(crate::admin::DEFAULT_FOR_SECS),
            reason.as_deref(),
            now,
            by,
        )),
        AdminRequest::Block {
            ip,
            for_secs,
            reason,
        } => View::Block(views::block(
            engine,
            ip.0,
            for_secs.unwrap_or(crate::admin::DEFAULT_FOR_SECS),
            reason.as_deref(),
            now,
            by,
        )),
        AdminRequest::Holds => View::Holds(views::in_force(engine, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_and_strangers_are_nobody() {
        let roles = Roles {
            auditor_uids: vec![Uid::from_raw(4242)],
            ..Default::default()
        };
        assert_eq!(
            role_of(&roles, Uid::from_raw(0), Gid::from_raw(0)),
            Some(Role::Admin)
        );
        assert_eq!(
            role_of(&roles, Uid::from_raw(4242), Gid::from_raw(4242)),
            Some(Role::Auditor)
        );
        assert_eq!(
            role_of(&roles, Uid::from_raw(4343), Gid::from_raw(4343)),
            None
        );
    }
}
