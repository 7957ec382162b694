//! Test doubles of the pipeline's two traits, so that its logic is tested without servers
//! (compiled for the crate's unit tests, and for other crates with the `testing` feature):
//!
//! - [`MemorySink`]: a [`Sink`](crate::sink::Sink) over in-memory tables, with failure
//!   injection, read through a shared [`MemoryHandle`].
//! - [`ScriptedSource`]: a [`Source`](crate::source::Source) that hands out a scripted list of
//!   steps and records its resets.
//! - [`lane`]: one lane's poller, batcher and writer wired as the supervisor wires them, and
//!   the events they send.
//! - Below: a small table model, rows, change sets and table handles, built without a
//!   database.

pub mod lane;
mod memory_sink;
mod scripted_source;

#[cfg(test)]
mod batcher_tests;
#[cfg(test)]
mod lane_tests;
#[cfg(test)]
mod writer_tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use memory_sink::{Committed, DeadLetter, Key, MemoryHandle, MemorySink, MemoryState};
pub use scripted_source::{ScriptedSource, SourceHandle, SourceLog};

use crate::error::{Error, Side};
use crate::model::{Change, ChangeSet, Column, Kind, Position, TableId, TableModel};
use crate::telemetry::TableHandle;
use crate::value::{Row, Value};

/// A table `name (id BIGINT PRIMARY KEY, v TEXT)`.
pub fn model(name: &str) -> Arc<TableModel> {
    let mut id = Column::new("id", "bigint", Kind::Int { bytes: 8 });
    id.nullable = false;
    Arc::new(TableModel {
        name: name.into(),
        columns: vec![id, Column::new("v", "text", Kind::Text)],
        primary_key: vec![0],
        indexes: Vec::new(),
        version: 1,
    })
}

/// A row of [`model`].
pub fn row(id: i64, v: &str) -> Row {
    vec![Value::Int(id), Value::Text(v.into())]
}

/// The primary key of the [`model`] row with this id.
pub fn key(id: i64) -> Key {
    Key(vec![Value::Int(id)])
}

/// A position as a source might write it.
pub fn position(n: u64) -> Position {
    Position(serde_json::json!({ "n": n }))
}

/// The position of a chunk of a source transaction: none (see [`crate::source::Txn`]).
pub fn no_position() -> Position {
    Position(serde_json::Value::Null)
}

/// A change set of `table`, with the bytes its changes hold.
pub fn changes(table: TableId, changes: Vec<Change>, position: Position) -> ChangeSet {
    ChangeSet {
        table,
        bytes: changes.iter().map(Change::bytes).sum(),
        changes,
        position,
        source_time: None,
        shape: None,
        first_reads: false,
        beside: false,
    }
}

/// Upserts of the rows `ids` (`v` = "v<id>") of `table`.
pub fn upserts(
    table: TableId,
    ids: impl IntoIterator<Item = i64>,
    position: Position,
) -> ChangeSet {
    let rows = ids
        .into_iter()
        .map(|id| Change::upsert(row(id, &format!("v{id}"))))
        .collect();
    changes(table, rows, position)
}

/// Handles of `n` tables (`t0`, `t1`, …), registered under names no other test uses.
pub fn handles(n: usize) -> Arc<[Arc<TableHandle>]> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|t| crate::telemetry::register(&format!("testing_{run}_t{t}")))
        .collect()
}

/// A transient error, as a lost connection gives.
pub fn retryable(what: &str) -> Error {
    Error::Database {
        side: Side::Target,
        context: what.into(),
        message: "connection reset (injected)".into(),
        code: Some("08006".into()),
        transient: true,
    }
}

/// Retry settings that retry at once (a few milliseconds apart).
pub fn quick_retry() -> crate::config::Retry {
    crate::config::Retry {
        connect_timeout_ms: 1_000,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
    }
}

/// Checks `cond` until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
