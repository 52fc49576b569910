//! One sink's bounded queue. The fan-out pushes without ever waiting: when the queue is
//! full, the `when_full` policy drops the new alert or the oldest waiting one, and the
//! drop is counted. The sink's task takes what is queued a batch at a time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::SinkCounters;
use crate::alert::Alert;

/// What a full queue does with one more alert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The new alert is dropped; what waits is kept (the first of a burst arrives).
    #[default]
    DropNewest,
    /// The oldest waiting alert is dropped to make room (the latest arrive).
    DropOldest,
}

/// What became of a pushed alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It waits in the queue.
    Queued,
    /// The queue was full: it was dropped (`drop_newest`).
    DroppedNew,
    /// The queue was full: the oldest was dropped to make room (`drop_oldest`).
    DroppedOldest,
    /// The queue is closed (shutting down): it was dropped.
    Closed,
}

/// A bounded queue of alerts for one sink.
#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Notify,
    capacity: usize,
    when_full: WhenFull,
    counters: Arc<SinkCounters>,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Arc<Alert>>,
    closed: bool,
}

impl Queue {
    /// An empty queue holding `capacity` alerts at most (at least one).
    pub fn new(capacity: usize, when_full: WhenFull, counters: Arc<SinkCounters>) -> Queue {
        Queue {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            when_full,
            counters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an alert without waiting; a full queue drops by its policy and counts it.
    pub fn push(&self, alert: Arc<Alert>) -> Pushed {
        let pushed = {
            let mut inner = self.lock();
            if inner.closed {
                Pushed::Closed
            } else if inner.items.len() < self.capacity {
                inner.items.push_back(alert);
                Pushed::Queued
            } else {
                match self.when_full {
                    WhenFull::DropNewest => Pushed::DroppedNew,
                    WhenFull::DropOldest => {
                        inner.items.pop_front();
                        inner.items.push_back(alert);
                        Pushed::DroppedOldest
                    }
                }
            }
        };
        match pushed {
            Pushed::Queued => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                self.ready.notify_one();
            }
            Pushed::DroppedNew | Pushed::DroppedOldest | Pushed::Closed => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        pushed
    }

    /// Takes up to `max` alerts, oldest first, waiting for one if none is queued. An
    /// empty batch means the queue is closed and empty.
    pub async fn pop_batch(&self, max: usize) -> Vec<Arc<Alert>> {
        loop {
            {
                let mut inner = self.lock();
                if !inner.items.is_empty() {
                    let n = inner.items.len().min(max.max(1));
                    let batch: Vec<_> = inner.items.drain(..n).collect();
                    self.counters
                        .queued
                        .fetch_sub(batch.len() as u64, Ordering::Relaxed);
                    return batch;
                }
                if inner.closed {
                    return Vec::new();
                }
            }
            // One consumer: a push between the check and here leaves a permit, so this
            // returns at once.
            self.ready.notified().await;
        }
    }

    /// Refuses further alerts; the consumer takes what is left, then gets an empty batch.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Alerts waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
