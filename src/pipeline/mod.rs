//! The replication pipeline, as actix actors.
//!
//! ```text
//! Poller ──(bounded crossbeam: RowMsg)──▶ Batcher ──(bounded crossbeam: BatchMsg)──▶ Writer
//!    └──────────────── Event (committed / finished / failed) ──────────────▶ Supervisor ◀──┘
//! ```
//! Poller, batcher and writer block on channels and databases, so each runs as a
//! `SyncArbiter` actor on its own thread (with a private current-thread tokio runtime for
//! its database I/O), never on an actix/tokio worker. Each handles one unit of work per
//! message and sends itself the next, so the bounded channels are the only backpressure:
//! a slow target slows the poller, and memory stays flat whatever the backlog.
//!
//! Shutdown: the supervisor drops the shutdown sender; the poller sees it between pages,
//! sends `End`, and the batcher and writer drain what is in flight, commit it, and finish.

pub mod batcher;
pub mod generator;
pub mod poller;
pub mod supervisor;
pub mod writer;

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};
use crossbeam_channel::Receiver;

use crate::config::Retry;
use crate::value::{Row, Value};

/// Poller → batcher.
#[derive(Debug)]
pub enum RowMsg {
    /// One page's rows (never empty), in keyset order. Whole pages travel, not single
    /// rows: one channel operation and one wake-up per page.
    Rows(Vec<Row>),
    /// Write what you hold now rather than waiting for the linger: the source is caught up
    /// (`caught_up`), or a row of an open transaction holds the next page back.
    Flush { caught_up: bool },
    /// No more rows will come: flush and pass `End` on.
    End,
}

/// A batch of rows in keyset order and the watermark they bring the table to.
#[derive(Debug)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub position: Vec<Value>,
}

/// Batcher → writer.
#[derive(Debug)]
pub enum BatchMsg {
    Batch(Batch),
    /// Every row read so far is in the batches sent before this one and the source had no
    /// more: the moment an initial load builds its deferred primary key.
    CaughtUp,
    End,
}

/// What a pipeline stage tells the supervisor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum Event {
    Committed {
        table: String,
        rows: usize,
        merged: bool,
        /// Rows PostgreSQL refused and that went to `sluice.dead_letters`.
        dead_lettered: usize,
        /// Cursor time of the batch's last row, when the first cursor column is a time.
        newest: Option<DateTime<Utc>>,
        committed_at: DateTime<Utc>,
    },
    /// The writer has committed everything it was given and stopped.
    Finished { table: String },
    /// A stage hit an error it cannot retry; the table's pipeline stops.
    Failed {
        table: String,
        stage: &'static str,
        error: String,
        exit_code: i32,
    },
    /// A transient error is being retried.
    Retrying {
        table: String,
        stage: &'static str,
        error: String,
        attempt: u32,
        delay: Duration,
    },
}

/// The shutdown signal seen by the stages: it is disconnected once shutdown was asked for.
#[derive(Clone)]
pub struct ShutdownSignal(pub Receiver<()>);

impl ShutdownSignal {
    pub fn requested(&self) -> bool {
        matches!(
            self.0.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }

    /// Sleeps up to `d`, waking early on shutdown. Returns true when shutdown was asked for.
    pub fn wait(&self, d: Duration) -> bool {
        matches!(
            self.0.recv_timeout(d),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    }
}

/// Exponential backoff with jitter: `base` doubling per attempt up to `max`, each delay
/// drawn from the upper half of its step so retries from many tables spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(retry: &Retry) -> Self {
        Backoff {
            base: Duration::from_millis(retry.backoff_base_ms),
            max: Duration::from_millis(retry.backoff_max_ms),
            attempt: 0,
        }
    }

    /// The next delay and the attempt number it belongs to.
    pub fn next_delay(&mut self) -> (u32, Duration) {
        self.attempt += 1;
        let cap = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        let jittered = cap.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        (self.attempt, jittered)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A current-thread tokio runtime for a stage's own database I/O.
pub(crate) fn stage_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let retry = Retry::default();
        let mut b = Backoff::new(&retry);
        let (_, first) = b.next_delay();
        assert!(first <= Duration::from_millis(retry.backoff_base_ms * 2));
        let max = Duration::from_millis(retry.backoff_max_ms);
        let mut last = Duration::ZERO;
        for _ in 0..30 {
            last = b.next_delay().1;
        }
        assert!(last <= max && last >= max / 2, "{last:?}");
    }

    #[test]
    fn shutdown_signal_wakes_waiters() {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let s = ShutdownSignal(rx);
        assert!(!s.requested());
        drop(tx);
        assert!(s.requested());
        assert!(s.wait(Duration::from_secs(60)));
    }
}
