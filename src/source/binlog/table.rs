//! A table the binlog source serves: its shape, where it stands, and what the stream noted
//! about it, and the SQL its copy reads with; shared by the source (snapshots, positions)
//! and the stream (its changes).

use std::sync::Arc;

use super::decode::ColumnDecoder;
use super::BinlogPos;
use crate::model::TableId;
use crate::source::mysql::{quote, ReadSpec};
use crate::source::poll::keyset::{self, Keyset};
use crate::telemetry::TableHandle;

/// One table served by the binlog source.
pub(super) struct BTable {
    pub id: TableId,
    pub spec: ReadSpec,
    pub keyset: Keyset,
    pub decoders: Vec<ColumnDecoder>,
    pub handle: Arc<TableHandle>,
    /// The table's binlog position: transactions that start before it are applied already.
    pub from: Option<BinlogPos>,
    /// The snapshot still to do: the key after which it goes on, and how far it got.
    pub snapshot: Option<super::SnapshotProgress>,
    pub(super) copy: TableCopy,
    /// The last position handed out for the table.
    pub(super) reported: Option<BinlogPos>,
    /// Stopped (a failure).
    pub done: bool,
    /// Its `[[tables]]` entry (a schema change is introspected again).
    pub config: crate::config::TableSettings,
    /// The table map the model was matched against (its column types, metadata and names),
    /// to notice a schema change at the next one that differs.
    pub table_map: Option<Vec<u8>>,
    /// A new shape the table's next changes carry, for the target to follow first.
    pub pending_shape: Option<Arc<crate::model::TableModel>>,
    /// Columns ALTER statements renamed since the table's shape last changed.
    pub renames: Vec<(String, String)>,
    /// A statement may have changed the table's indexes: read them again at its next change.
    pub indexes_stale: bool,
    /// Its changes keep their order among other ordered tables' (`source::ordered_tables`).
    pub ordered: bool,
    /// Its target's primary key is deferred: it is copied before the stream starts.
    pub deferred_key: bool,
    /// Its copy starts by emptying the target table (its binlog was purged: what the target
    /// holds may be stale).
    pub empty_first: bool,
}

/// One table's snapshot reads.
pub(super) struct TableCopy {
    pub first: String,
    pub after: String,
    pub binds: Vec<usize>,
    /// Rows asked for per page, following the row width.
    pub limit: usize,
}

impl TableCopy {
    pub fn new(spec: &ReadSpec, keyset: &Keyset, first_limit: usize) -> Self {
        let t = &spec.model;
        let cols: Vec<String> = keyset
            .columns
            .iter()
            .map(|&i| quote(&t.columns[i].name))
            .collect();
        let phs: Vec<String> = keyset
            .columns
            .iter()
            .map(|&i| match t.columns[i].kind {
                crate::model::Kind::Decimal { precision, scale } => {
                    format!("CAST(? AS DECIMAL({precision},{scale}))")
                }
                _ => "?".into(),
            })
            .collect();
        let (cond, binds) = keyset::condition(&cols, &phs, true, true);
        let (select, from, order) = (spec.select_list(), quote(&t.name), cols.join(", "));
        TableCopy {
            first: format!("SELECT {select} FROM {from} ORDER BY {order} LIMIT ?"),
            after: format!("SELECT {select} FROM {from} WHERE {cond} ORDER BY {order} LIMIT ?"),
            binds,
            limit: first_limit.max(1),
        }
    }
}
