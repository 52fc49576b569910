//! The Exim socket: the line protocol of `docs/PROTOCOL.md`, one task per connection.
//!
//! A newline-terminated request is answered and the connection stays open (the library's
//! persistent connection); a request ended by end of input is answered and the connection
//! closed (Exim's `${readsocket}` reads until EOF). Malformed input gets `error ...` and
//! the connection goes on.
//!
//! Limits (`[server]`, `docs/PROTOCOL.md` "Limits"): at most `max_connections` open; at
//! the cap, the connection idle the longest is closed to make room (the library opens a
//! new one on its next call, transparently), and when none is idle the newcomer gets
//! `defer <reason>` and is closed. A connection idle for `exim_idle_timeout_secs` is
//! closed; a line begun but not ended (no newline, no end of input) within
//! `exim_request_timeout_ms` gets `error ...` and the connection is closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::accept::{self, Expired, Refusal, Slot, Slots, Watched, WhenFull};
use super::unix::Kept;
use crate::engine::Engine;
use crate::protocol::framing::{Frame, LineReader};
use crate::protocol::{Reply, parse_line};

/// The Exim socket's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a connection may wait for its next request.
    pub idle: Duration,
    /// How long a begun request line may take to be ended.
    pub request: Duration,
}

/// The answer to a connection over the cap when no connection could be shed.
pub const BUSY_REPLY: &[u8] = b"defer mail access checks are overloaded, please try again later\n";

/// Refused connections being closed gently at once at most; more are closed bluntly.
const MAX_REFUSING: usize = 64;

/// How long a refused connection is read from (and what it sends dropped) before it is
/// closed, so that the client reads the answer rather than a reset.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Accepts connections until `shutdown` turns true; `slots` say when the open ones have
/// closed. Every few seconds `kept` checks the socket file: deleted, it is bound anew and
/// accepting goes on there.
pub async fn serve(
    listener: UnixListener,
    mut kept: Kept,
    engine: Arc<Engine>,
    slots: Arc<Slots>,
    timeouts: Timeouts,
    shutdown: watch::Receiver<bool>,
) {
    let refusing = Arc::new(AtomicUsize::new(0));
    // The listener in use, and the one it replaced (for one more check period: what
    // was already queued on it is still accepted).
    let current = Mutex::new((Arc::new(listener), None::<Arc<UnixListener>>));
    let current = &current;
    let listening = move || {
        current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    };
    accept::serve(
        slots,
        WhenFull::Refuse,
        shutdown,
        move || {
            let (listener, retiring) = listening();
            async move {
                let accepted = match retiring {
                    Some(old) => tokio::select! {
                        biased;
                        r = old.accept() => r,
                        r = listener.accept() => r,
                    },
                    None => listener.accept().await,
                };
                accepted.map(|(s, _)| (s, None))
            }
        },
        |stream, slot| {
            engine.stats.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(connection(stream, engine.clone(), slot, timeouts));
        },
        |stream, _: Refusal| refuse(stream, &refusing),
        || {
            let mut listeners = current.lock().unwrap_or_else(PoisonError::into_inner);
            listeners.1 = None;
            if let Some(renewed) = kept.check() {
                let old = std::mem::replace(&mut listeners.0, Arc::new(renewed));
                listeners.1 = Some(old);
            }
        },
    )
    .await
}

/// Answers a connection over the cap with [`BUSY_REPLY`] and closes it.
fn refuse(stream: UnixStream, refusing: &Arc<AtomicUsize>) {
    // A new connection's send buffer is empty: the line goes out whole or not at all.
    let _ = stream.try_write(BUSY_REPLY);
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let drain = async {
            let mut scratch = [0u8; 1024];
            while let Ok(n) = stream.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

async fn connection(stream: UnixStream, engine: Arc<Engine>, slot: Slot, timeouts: Timeouts) {
    engine
        .stats
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    if let Err(e) = converse(stream, &engine, &slot, timeouts).await {
        tracing::debug!(error = %e, "exim connection ended with an error");
    }
    engine
        .stats
        .open_connections
        .fetch_sub(1, Ordering::Relaxed);
}

async fn converse(
    stream: UnixStream,
    engine: &Engine,
    slot: &Slot,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let rd = Watched::new(rd, slot.conn().clone(), timeouts.idle, timeouts.request);
    let mut reader = LineReader::new(rd);
    let mut out = Vec::with_capacity(512);
    // Shed to make room, or the listener stops: an idle connection just closes.
    let signal = slot.conn().signalled();
    let mut signal = std::pin::pin!(signal);
    loop {
        let frame = tokio::select! {
            f = reader.next_frame() => match f {
                Ok(f) => f,
                Err(e) => match accept::expired(&e) {
                    Some(Expired::Request) => {
                        slot.slots().request_timeout("a request line", None, timeouts.request);
                        let reply = Reply::Error(format!(
                            "request line not complete within {} ms",
                            timeouts.request.as_millis()
                        ));
                        engine.stats.reply(&reply);
                        reply.write_line(&mut out);
                        break;
                    }
                    Some(Expired::Idle) => {
                        slot.slots().idle_timeout();
                        break;
                    }
                    Some(Expired::Shed) => break,
                    None => return Err(e),
                },
            },
            () = signal.as_mut() => break,
        };
        let last = match frame {
            Frame::Line(line) => {
                answer(engine, line).write_line(&mut out);
                false
            }
            Frame::LastLine(line) => {
                answer(engine, line).write_line(&mut out);
                true
            }
            Frame::TooLong => {
                engine.stats.malformed.fetch_add(1, Ordering::Relaxed);
                let reply = Reply::Error(format!(
                    "request line too long (limit {} bytes)",
                    access_wire::MAX_LINE_BYTES
                ));
                engine.stats.reply(&reply);
                reply.write_line(&mut out);
                false
            }
            Frame::Eof => true,
        };
        // Pipelined requests get their replies in one write.
        if last || !reader.has_buffered_line() {
            wr.write_all(&out).await?;
            out.clear();
        }
        if last {
            wr.shutdown().await?;
            return Ok(());
        }
    }
    if !out.is_empty() {
        wr.write_all(&out).await?;
        wr.shutdown().await?;
    }
    Ok(())
}

fn answer(engine: &Engine, line: &[u8]) -> Reply {
    match parse_line(line) {
        Ok(cmd) => engine.handle(&cmd, Timestamp::now()),
        Err(e) => {
            engine.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "malformed request on the exim socket");
            let reply = Reply::Error(e.to_string());
            engine.stats.reply(&reply);
            reply
        }
    }
}
