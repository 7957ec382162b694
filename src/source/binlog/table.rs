//! A table the binlog source serves: its shape, where it stands, and what the stream noted
//! about it; shared by the source (snapshots, positions) and the stream (its changes).

use std::sync::Arc;

use super::decode::ColumnDecoder;
use super::snapshot::TableCopy;
use super::BinlogPos;
use crate::model::TableId;
use crate::source::mysql::ReadSpec;
use crate::source::poll::keyset::Keyset;
use crate::telemetry::TableHandle;
use crate::value::Value;

/// One table served by the binlog source.
pub(super) struct BTable {
    pub id: TableId,
    pub spec: ReadSpec,
    pub keyset: Keyset,
    pub decoders: Vec<ColumnDecoder>,
    pub handle: Arc<TableHandle>,
    /// The table's binlog position: transactions that start before it are applied already.
    pub from: Option<BinlogPos>,
    /// The snapshot still to do, and the key after which it goes on.
    pub snapshot: Option<Option<Vec<Value>>>,
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
}
