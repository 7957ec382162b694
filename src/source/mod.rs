//! Reading the source (MySQL/MariaDB).
//!
//! - [`mysql`]: connections, the server's flavour, introspection, how rows are read.
//! - [`poll`]: keyset polling past a stored position.
//! - [`binlog`]: a consistent snapshot, then the row-based binary log, whole transactions.
//!
//! # The contract
//! The pipeline sees only the [`Source`] trait. A source serves a set of tables and hands
//! out, one [`Step`] at a time, [`ChangeSet`]s: changes of one table and the [`Position`]
//! that table is at once they are applied. Positions are the source's own (a keyset for
//! polling) and are stored by the sink as they are. A source never hands out a change twice
//! within a run, and after a restart it resumes from the positions it is given: changes at
//! or before them are not handed out again, changes after them all are. Whether a source
//! may hand out a change that was applied before a crash but not yet covered by a committed
//! position is the sink's concern: it applies idempotently.
//!
//! [`capture`] is what the rest of sluice asks of the capture mode and of stored positions.
//!
//! [`TablePlan`] is what start-up learns of a table for its capture mode, and [`open`] builds
//! the source the configuration asks for.

pub mod binlog;
pub mod capture;
pub mod mysql;
pub mod poll;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::model::{ChangeSet, Position, TableId, TableModel};
use crate::telemetry::TableHandle;

/// What the source's table does after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// More may be read at once.
    More,
    /// Nothing more for now (with `--once`: the end of the table as of start is reached).
    CaughtUp,
    /// A row of an open transaction holds the next changes back: nothing was read.
    Held,
}

/// One read of one table.
#[derive(Debug)]
pub struct Read {
    pub table: TableId,
    /// The changes read, with the table's position after them; `None` when nothing was.
    pub changes: Option<ChangeSet>,
    pub after: After,
}

/// One source transaction's changes, or a chunk of one (see the module doc).
#[derive(Debug)]
pub struct Txn {
    /// One change set per table, in the order the tables were first changed. Their positions
    /// are the transaction's end; they only count on the complete chunk.
    pub parts: Vec<ChangeSet>,
    /// False: more of the same transaction follows.
    pub complete: bool,
    /// The batch holding it goes to the writer at once, without lingering (a copy beside the
    /// stream sends its chunks a few at a time, so the next are read while these are
    /// written).
    pub flush: bool,
}

/// What [`Source::next`] did.
#[derive(Debug)]
pub enum Step {
    Read(Read),
    /// A source transaction (or a chunk of one).
    Txn(Txn),
    /// Every table is caught up (nothing more to read for now): write what is held.
    Idle,
    /// No table is due for a read before this long: wait (waking on shutdown), then ask
    /// again.
    Wait(Duration),
    /// A table failed for good (a value that cannot be read, a table that disappeared): the
    /// source has stopped reading it; the other tables go on.
    Failed {
        table: TableId,
        error: Error,
    },
    /// `--once`: every table has been read up to its end as of start (or has failed).
    Finished,
}

/// A stream of changes of a set of tables. See the module doc for the contract.
pub trait Source: Send {
    /// The next read. An `Err` concerns the source as a whole (a lost connection): if it is
    /// retryable, call [`Source::reset`] and then `next` again after a backoff.
    fn next(&mut self) -> BoxFuture<'_, Result<Step>>;

    /// Drops connections after an error; the next call reconnects and goes on after the last
    /// changes handed out.
    fn reset(&mut self);
}

/// The step for a table that failed for good: a table a `[[tables]]` pattern took that is
/// gone from the source just ends (it is left out from the next start, or round), where any
/// other failure stops the table as one.
pub fn table_failed(table: TableId, config: &crate::config::TableSettings, error: Error) -> Step {
    if matches!(error, Error::TableGone(_)) && config.from_pattern {
        tracing::info!(table = %config.name, "the source table is gone; a [[tables]] pattern took it, so it is no longer replicated");
        Step::Wait(Duration::ZERO)
    } else {
        Step::Failed { table, error }
    }
}

/// What start-up learnt of one table, for the configured capture mode.
#[derive(Debug)]
pub enum TablePlan {
    Poll(poll::PollPlan),
    Binlog(binlog::BinlogPlan),
}

impl TablePlan {
    pub fn model(&self) -> &Arc<TableModel> {
        &self.spec().model
    }

    /// How the table's rows are selected and decoded.
    pub fn spec(&self) -> &mysql::ReadSpec {
        match self {
            TablePlan::Poll(p) => &p.spec,
            TablePlan::Binlog(p) => &p.spec,
        }
    }

    /// Checks that a stored position can be resumed from (the same keyset, the same
    /// capture mode).
    pub fn check_position(&self, p: &Position) -> Result<()> {
        match self {
            TablePlan::Poll(plan) => plan.keyset.decode(&plan.spec.model, p).map(|_| ()),
            TablePlan::Binlog(plan) => binlog::Stored::decode(&plan.spec.model, p).map(|_| ()),
        }
    }

    /// Sets the shape version of the table's model.
    pub fn set_version(&mut self, version: u32) {
        let spec = match self {
            TablePlan::Poll(p) => &mut p.spec,
            TablePlan::Binlog(p) => &mut p.spec,
        };
        Arc::make_mut(&mut spec.model).version = version;
    }

    /// Estimated rows in the source table.
    pub fn estimated_rows(&self) -> u64 {
        match self {
            TablePlan::Poll(p) => p.estimated_rows,
            TablePlan::Binlog(p) => p.estimated_rows,
        }
    }

    /// The table's foreign keys whose actions change child rows (CASCADE, SET NULL), with
    /// their parents among `tables` (the run's tables, by name); the others are left out.
    pub fn foreign_keys(&self, tables: &[&str]) -> Vec<crate::model::ForeignKey> {
        use crate::model::{FkAction, ForeignKey};
        let TablePlan::Binlog(plan) = self else {
            return Vec::new();
        };
        let action = |rule: &str| match rule.to_ascii_uppercase().as_str() {
            "CASCADE" => FkAction::Cascade,
            "SET NULL" => FkAction::SetNull,
            _ => FkAction::None,
        };
        let model = &plan.spec.model;
        plan.foreign_keys
            .iter()
            .filter_map(|fk| {
                let acts = action(&fk.on_delete) != FkAction::None
                    || action(&fk.on_update) != FkAction::None;
                let Some(parent) = tables.iter().position(|t| *t == fk.parent) else {
                    if acts {
                        tracing::warn!(table = %model.name, foreign_key = %fk.name, parent = %fk.parent, on_delete = %fk.on_delete, on_update = %fk.on_update, "this foreign key's parent is not replicated (not in [[tables]], or in another database), so its cascade cannot be mirrored: rows of this table that the source deletes or changes through it (no binlog event says so) stay unchanged on the target. Replicate the parent too, or repair the table from time to time (`sluice verify --table {} --repair`, or [verify] repair = true)", model.name);
                    }
                    return None;
                };
                let Some(columns) = fk
                    .columns
                    .iter()
                    .map(|c| model.column(c))
                    .collect::<Option<Vec<_>>>()
                else {
                    if acts {
                        tracing::warn!(table = %model.name, foreign_key = %fk.name, "this foreign key cannot be mirrored through the column mapping (a column of it is in exclude_columns), so its cascade is not applied on the target: rows of this table that the source deletes or changes through it (no binlog event says so) stay unchanged on the target. Change the mapping, or repair the table from time to time (`sluice verify --table {} --repair`, or [verify] repair = true)", model.name);
                    }
                    return None;
                };
                let (on_delete, on_update) = (action(&fk.on_delete), action(&fk.on_update));
                (on_delete != FkAction::None || on_update != FkAction::None).then(|| ForeignKey {
                    name: fk.name.clone(),
                    columns,
                    parent,
                    parent_columns: fk.parent_columns.clone(),
                    on_delete,
                    on_update,
                })
            })
            .collect()
    }

    /// Whether the table is to be loaded (snapshotted) before its changes follow.
    pub fn will_load(&self, start: Option<&Position>) -> bool {
        match self {
            TablePlan::Poll(_) => false,
            TablePlan::Binlog(plan) => match start {
                None => true,
                Some(p) => binlog::Stored::decode(&plan.spec.model, p)
                    .map(|s| s.snapshot.is_some())
                    .unwrap_or(true),
            },
        }
    }

    /// Columns that order versions of one row, when the source can tell (a polling cursor).
    pub fn version_columns(&self) -> Vec<usize> {
        match self {
            TablePlan::Poll(p) => p.keyset.cursor.clone(),
            TablePlan::Binlog(_) => Vec::new(),
        }
    }
}

/// Introspects one configured table for the configured capture mode.
pub async fn plan_table(
    conn: &mut sea_orm::sqlx::MySqlConnection,
    settings: &Settings,
    table: &crate::config::TableSettings,
) -> Result<TablePlan> {
    match settings.source.capture {
        crate::config::Capture::Poll => {
            poll::plan(conn, settings, table).await.map(TablePlan::Poll)
        }
        crate::config::Capture::Binlog => binlog::plan(conn, settings, table)
            .await
            .map(TablePlan::Binlog),
    }
}

/// One table a source is opened for.
pub struct OpenTable {
    pub id: TableId,
    pub plan: Arc<TablePlan>,
    /// The stored position to resume after; `None` to start from the beginning.
    pub start: Option<Position>,
    pub handle: Arc<TableHandle>,
    /// Its changes keep their order among those of the other `ordered` tables (see
    /// [`ordered_tables`]).
    pub ordered: bool,
    /// Its target's primary key is deferred (an initial load in progress): only a copy
    /// before any streaming may write it (binlog capture copies it so).
    pub deferred_key: bool,
}

/// The tables whose changes must reach the target in the source's order among each other:
/// both ends of every mirrored foreign key whose actions change rows (the target applies
/// the cascade itself, so what it deletes depends on which rows are there when the parent
/// goes). `fks`: each table's foreign keys (as the child), parents by id.
pub fn ordered_tables<'a>(
    fks: impl IntoIterator<Item = (TableId, &'a [crate::model::ForeignKey])>,
) -> std::collections::HashSet<TableId> {
    let mut out = std::collections::HashSet::new();
    for (child, keys) in fks {
        for fk in keys {
            out.insert(child);
            out.insert(fk.parent);
        }
    }
    out
}

/// Bytes read and not yet committed on the target, as the pipeline counts them: binlog
/// capture reads a copy's next chunk only once the last ones are written, so the changes
/// streamed meanwhile never queue behind a backlog of chunks.
pub type HeldBytes = std::sync::Arc<dyn Fn() -> usize + Send + Sync>;

/// Opens the source the configuration asks for, serving `tables`. `once`: stop at the end
/// of each table as of start.
pub fn open(
    settings: &Settings,
    once: bool,
    tables: Vec<OpenTable>,
    held: HeldBytes,
) -> Result<Box<dyn Source>> {
    match settings.source.capture {
        crate::config::Capture::Poll => {
            Ok(Box::new(poll::PollSource::new(settings, once, tables)?))
        }
        crate::config::Capture::Binlog => Ok(Box::new(binlog::BinlogSource::new(
            settings, once, tables, held,
        )?)),
    }
}
