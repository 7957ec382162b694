//! The replication pipeline, as actix actors.
//!
//! ```text
//!            ┌──────────────── one lane (of up to `max_*_connections`) ─────────────────┐
//! Source ──▶ Poller ──(bounded: ReadMsg)──▶ Batcher ──(bounded: BatchMsg)──▶ Writer ──▶ Sink
//!              └──────────── Event (a table failed, the lane finished) ──────▶ Supervisor
//! ```
//! Tables are spread over lanes; each lane is one poller, one batcher and one writer, with
//! one connection to each side, serving its tables in turn. Threads and connections are
//! bounded by the settings, not by the number of tables.
//!
//! Poller, batcher and writer block on channels and databases, so each runs as a
//! `SyncArbiter` actor on its own thread (with a private current-thread tokio runtime for
//! its database I/O), never on an actix/tokio worker. Each handles one unit of work per
//! message and sends itself the next, so the bounded channels are the only backpressure.
//! Memory is bounded in bytes: every change set read holds a [`budget::Lease`] on the
//! process's byte budget until its batch is committed (or dropped).
//!
//! Shutdown ([`crate::shutdown`]): the poller stops at its next step and sends `End`; the
//! batcher and writer drain what is in flight and commit it, for at most the grace period.

pub mod batcher;
mod budget;
pub mod generator;
pub mod poller;
pub(crate) mod side;
pub mod supervisor;
pub mod writer;

use std::sync::Arc;

use actix::{Message, Recipient};
use crossbeam_channel::{Sender, TrySendError};

pub use budget::{Budget, Lease};

use crate::error::Error;
use crate::model::{Batch, ChangeSet, TableId};
use crate::shutdown::Shutdown;
use crate::telemetry::TableHandle;

/// Poller → batcher.
#[derive(Debug)]
pub enum ReadMsg {
    /// One read's changes of one table (never empty), and the bytes they hold.
    Changes(ChangeSet, Lease),
    /// Write what you hold of `table` now rather than waiting for the linger: the source is
    /// caught up with it (`caught_up`), or a row of an open transaction holds it back.
    Flush { table: TableId, caught_up: bool },
    /// A source transaction (or a chunk of one), kept whole.
    Txn(crate::source::Txn, Lease),
    /// The source is caught up: write what you hold.
    Idle,
}

/// Batcher → writer.
#[derive(Debug)]
pub enum BatchMsg {
    Batch(Batch, Lease),
    /// Every change of `table` read so far is in the batches sent before this one, and the
    /// source had no more: the moment an initial load builds its deferred primary key.
    CaughtUp(TableId),
}

/// What a pipeline stage tells the supervisor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum Event {
    /// A table stopped for good (its handle is already marked).
    TableFailed {
        table: TableId,
        stage: &'static str,
        error: Arc<Error>,
    },
    /// A lane's writer has committed everything it was given and stopped.
    LaneFinished { lane: usize },
    /// A lane lost a target transaction that spanned several batches (a large source
    /// transaction): it must stop and start again from the stored positions.
    LaneBroken { lane: usize, error: Arc<Error> },
}

/// Sends on a bounded channel, blocking while it is full. After shutdown it waits at most
/// until the grace period ends. Returns false when the message was dropped (the receiver is
/// gone, or the grace period is over): whatever it held was not committed, and is read again
/// on the next start.
pub(crate) fn send<T>(tx: &Sender<T>, msg: T, shutdown: &Shutdown) -> bool {
    let msg = match tx.try_send(msg) {
        Ok(()) => return true,
        Err(TrySendError::Disconnected(_)) => return false,
        Err(TrySendError::Full(m)) => m,
    };
    let until_grace = |msg: T| match shutdown.grace_deadline() {
        Some(deadline) => tx.send_deadline(msg, deadline).is_ok(),
        None => false,
    };
    if shutdown.requested() {
        return until_grace(msg);
    }
    // `msg` is only moved by the arm that is selected.
    crossbeam_channel::select! {
        send(tx, msg) -> r => r.is_ok(),
        recv(shutdown.receiver()) -> _ => until_grace(msg),
    }
}

/// Stops `table` for good and tells the supervisor, once (a table fails once, whichever
/// stage finds it).
pub(crate) fn table_failed(
    handles: &[Arc<TableHandle>],
    events: &Recipient<Event>,
    table: TableId,
    stage: &'static str,
    error: Arc<Error>,
) {
    if handles[table].fail(error.clone()) {
        events.do_send(Event::TableFailed {
            table,
            stage,
            error,
        });
    }
}

/// A current-thread tokio runtime for a stage's own database I/O.
pub(crate) fn stage_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built")
}
