//! Writing the target.
//!
//! - [`postgres`]: the PostgreSQL sink, split by concern (DDL, types, COPY, the writer, the
//!   initial load).
//!
//! # The contract
//! [`Sink::apply`] applies every change of a [`Batch`] and stores each of its tables'
//! positions **in one transaction**: after a crash at any instant, the target holds exactly
//! the changes the stored positions cover.
//!
//! - **Delivery is at least once.** A batch may come again after a crash or after a COMMIT
//!   whose outcome was lost, so applying is idempotent: inserts and upserts overwrite the
//!   row with the same primary key, deletes of absent rows do nothing, and a batch ends the
//!   same applied twice. Changes are applied in order: when a batch holds several changes
//!   of one key, the last one wins; an update whose key changed removes the old key's row.
//! - **Durable** means committed by PostgreSQL: `apply` returns once it is.
//! - **A bad row** (a value PostgreSQL refuses) never fails silently: with `on_bad_row =
//!   "stop"` the batch fails with [`Error::BadRow`](crate::error::Error::BadRow) naming the
//!   row and nothing of it is committed; with `"dead_letter"` the row goes to
//!   `sluice.dead_letters` in the same transaction and the rest of the batch commits.
//! - **Ownership:** every position write checks the table's ownership epoch; a batch for a
//!   table this process no longer owns fails with
//!   [`Error::Fenced`](crate::error::Error::Fenced) and commits nothing.
//! - **Concurrency:** one sink instance is used by one writer at a time; a table's batches
//!   all go through one instance, in order. Different instances (one per lane) write
//!   different tables concurrently.
//! - After a retryable error, call [`Sink::reset`]: the next call opens a new connection.
//! - **Chunks.** A batch with `commit: false` is applied in a transaction that stays open; the
//!   positions are stored and the transaction committed with the next batch that has
//!   `commit: true`.

pub mod postgres;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::Result;
use crate::model::{Batch, TableId, TableModel};

/// One table a sink writes.
#[derive(Debug, Clone)]
pub struct SinkTable {
    pub id: TableId,
    pub model: Arc<TableModel>,
    /// The ownership epoch this process holds for the table.
    pub epoch: i64,
    /// The primary-key constraint an initial load dropped, to build once caught up.
    pub deferred_key: Option<String>,
    /// Columns that order versions of one row (a polling cursor): while the key is
    /// deferred, the copy with the greatest values is the one kept.
    pub version_columns: Vec<usize>,
    /// Foreign keys to other tables whose actions the target must apply (see
    /// [`postgres::foreign_keys`]).
    pub foreign_keys: Vec<crate::model::ForeignKey>,
    /// The table is being loaded (snapshotted): its foreign keys wait until it is done.
    pub loading: bool,
    /// What a column dropped on the source does to the target's.
    pub on_drop_column: crate::config::OnDropColumn,
    /// What the table becomes on the target (its name, schema, columns, masks); `model`
    /// stays the source's.
    pub map: postgres::map::TableMap,
    /// The table's stats, which the sink counts its waits for DDL locks on.
    pub handle: Arc<crate::telemetry::TableHandle>,
}

/// Makes a sink (the role its connection names itself by, `writer 0` or `copy writer 0`;
/// its tables): how the pipeline gets its sinks without knowing which kind they are.
pub type SinkFactory = Arc<dyn Fn(String, Vec<SinkTable>) -> Box<dyn Sink> + Send + Sync>;

/// What one table's part of a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartApplied {
    pub table: TableId,
    /// Changes applied (rows written or deleted), dead letters and rows a `where` filter
    /// kept off excluded.
    pub rows: usize,
    /// The part went through the staging merge rather than a direct COPY.
    pub merged: bool,
    /// Rows PostgreSQL refused, kept in `sluice.dead_letters`.
    pub dead_lettered: usize,
    /// Rows a `where` filter kept off the target.
    pub filtered: usize,
}

/// What the source having caught up with a table finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaughtUp {
    /// The initial load's deferred primary key was built, removing this many older copies
    /// of rows updated during the load.
    pub key_built: Option<u64>,
}

/// A place changes are applied to. See the module doc for the contract.
pub trait Sink: Send {
    /// Applies a batch and stores its positions, in one transaction.
    fn apply<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Vec<PartApplied>>>;

    /// The source has caught up with `table` (every change read so far was in the batches
    /// applied before): finish what waits for that, such as an initial load's deferred key.
    fn caught_up(&mut self, table: TableId) -> BoxFuture<'_, Result<CaughtUp>>;

    /// Drops the connection after an error; the next call reconnects.
    fn reset(&mut self);

    /// A transaction is open across batches (chunks of a large source transaction, see
    /// [`Batch`]): after an error it cannot be retried alone, since what it applied so far
    /// is rolled back with it; the source must be read again from the stored positions.
    fn in_transaction(&self) -> bool;

    /// After [`Sink::apply`] failed: the table whose part the error came from, when it came
    /// from one (its definition, one of its rows), so that only that table stops and the
    /// batch's other parts are applied without it. `None` when the error is the
    /// transaction's as a whole (BEGIN, COMMIT, the connection).
    fn failed_table(&self) -> Option<TableId> {
        None
    }
}
