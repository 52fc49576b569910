//! The accept loop the Exim socket and the policy endpoint share: connections capped,
//! each handed to its own task with the slot it holds, until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Accepts connections with `accept` until `shutdown` turns true, at most
/// `max_connections` open at once (past the cap, new ones wait in the listen backlog
/// until a slot frees), and hands each to `start` with its slot and the shutdown signal.
/// Returns the semaphore whose permits the open connections hold, so the caller can
/// wait for them. `what` names the listener in log lines.
pub async fn accept_capped<C, F>(
    what: &'static str,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    mut accept: impl FnMut() -> F,
    mut start: impl FnMut(C, OwnedSemaphorePermit, watch::Receiver<bool>),
) -> Arc<Semaphore>
where
    F: Future<Output = std::io::Result<C>>,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let connection = tokio::select! {
            r = accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the {what}");
                    // Typically EMFILE: give connections a moment to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        start(connection, permit, shutdown.clone());
    }
    slots
}
