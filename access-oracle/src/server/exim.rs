//! The Exim socket: the line protocol of `docs/PROTOCOL.md`, one task per connection.
//!
//! A newline-terminated request is answered and the connection stays open (the library's
//! persistent connection); a request ended by end of input is answered and the connection
//! closed (Exim's `${readsocket}` reads until EOF). Malformed input gets `error ...` and
//! the connection goes on. Connections are capped: past the cap, new ones wait in the
//! listen backlog until a slot frees.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::engine::Engine;
use crate::protocol::framing::{Frame, LineReader};
use crate::protocol::{Reply, parse_line};

/// Accepts connections until `shutdown` turns true; returns the semaphore whose permits
/// are held by open connections, so the caller can wait for them.
pub async fn serve(
    listener: UnixListener,
    engine: Arc<Engine>,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
) -> Arc<Semaphore> {
    super::accept::accept_capped(
        "exim socket",
        max_connections,
        shutdown,
        || listener.accept(),
        |(stream, _), permit, shutdown| {
            engine.stats.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(connection(stream, engine.clone(), permit, shutdown));
        },
    )
    .await
}

async fn connection(
    stream: UnixStream,
    engine: Arc<Engine>,
    _permit: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    engine
        .stats
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    if let Err(e) = converse(stream, &engine, &mut shutdown).await {
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
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut reader = LineReader::new(rd);
    let mut out = Vec::with_capacity(512);
    loop {
        let frame = tokio::select! {
            f = reader.next_frame() => f?,
            // Stop taking requests; an idle persistent connection just closes.
            _ = shutdown.changed() => break,
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
            break;
        }
    }
    if !out.is_empty() {
        wr.write_all(&out).await?;
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
