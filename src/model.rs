//! What travels through the pipeline, owned by neither side: the table model (columns and
//! key), changes with their operation, and the source's position.
//!
//! A source turns its rows into [`Change`]s of a [`TableModel`] and hands them out in
//! [`ChangeSet`]s, each with the [`Position`] the table is at once they are applied. The
//! position is the source's own: the pipeline and the sink store it as the source wrote
//! it and never look inside.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::value::{Row, Value};

/// A table's index in the run's list of tables.
pub type TableId = usize;

/// What kind of values a column holds, independent of either database. The source reads
/// every column into the [`Value`] its kind names; the sink maps each kind to a target type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Value::Bool`.
    Bool,
    /// A signed integer of `bytes` bytes (1, 2, 3, 4 or 8): `Value::Int`.
    Int { bytes: u8 },
    /// An unsigned integer of `bytes` bytes: `Value::UInt`.
    UInt { bytes: u8 },
    /// `Value::Float`, holding an f32 exactly.
    Float32,
    /// `Value::Float`.
    Float64,
    /// An exact decimal, as text with every digit: `Value::Text`.
    Decimal { precision: u32, scale: u32 },
    /// `Value::Text`.
    Text,
    /// JSON text: `Value::Text`.
    Json,
    /// One label of a fixed list, as text: `Value::Text`.
    Enum,
    /// Labels of a fixed list, comma-separated text: `Value::Text`.
    Set,
    /// `Value::Bytes`.
    Bytes,
    /// `Value::Date`.
    Date,
    /// A date and time without zone, `fsp` fractional digits: `Value::DateTime`.
    DateTime { fsp: u8 },
    /// An instant, `fsp` fractional digits: `Value::Timestamp`.
    Timestamp { fsp: u8 },
    /// A signed duration as `[-]H:MM:SS.ffffff` text: `Value::Text`.
    Time { fsp: u8 },
    /// A year (0 or 1901–2155): `Value::Int`.
    Year,
    /// A bit string of `n` bits as text of 0s and 1s: `Value::Text`.
    Bits(u32),
}

impl Kind {
    /// DATE, DATETIME and TIMESTAMP: the kinds whose zero dates need care.
    pub fn is_date(self) -> bool {
        matches!(
            self,
            Kind::Date | Kind::DateTime { .. } | Kind::Timestamp { .. }
        )
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// The source's own type, as it names it (e.g. `int(10) unsigned`), for messages.
    pub source_type: String,
    pub kind: Kind,
    /// Whether the source column allows NULL.
    pub nullable: bool,
    /// A zero date (which the target cannot hold) arrives as NULL (`zero_dates = "null"`),
    /// so a column the source keeps NOT NULL may still bring one.
    pub null_on_zero_date: bool,
}

impl Column {
    /// Whether NULL can arrive in this column, one way or the other.
    pub fn may_be_null(&self) -> bool {
        self.nullable || self.null_on_zero_date
    }
}

/// A replicated table: its columns and its primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableModel {
    pub name: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
}

impl TableModel {
    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The primary-key values of a row.
    pub fn key_of(&self, row: &Row) -> Vec<Value> {
        self.primary_key.iter().map(|&i| row[i].clone()).collect()
    }

    /// Primary key of a row, for messages: `id=3, region="eu"`.
    pub fn describe_key(&self, row: &Row) -> String {
        self.describe_key_values(&self.key_of(row))
    }

    /// Primary-key values, for messages.
    pub fn describe_key_values(&self, key: &[Value]) -> String {
        self.primary_key
            .iter()
            .zip(key)
            .map(|(&i, v)| format!("{}={}", self.columns[i].name, v.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a foreign key does on the parent side (`ON DELETE` / `ON UPDATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FkAction {
    Cascade,
    SetNull,
    /// `RESTRICT` / `NO ACTION`: the source refused the change; nothing to do.
    None,
}

/// A foreign key between two replicated tables whose actions change child rows: on the
/// source, InnoDB applies them without writing a row event, so the target must apply them
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The source's constraint name.
    pub name: String,
    /// Child columns (indexes into the child table's columns).
    pub columns: Vec<usize>,
    /// The parent table.
    pub parent: TableId,
    /// Parent column names, in the order of `columns`.
    pub parent_columns: Vec<String>,
    pub on_delete: FkAction,
    pub on_update: FkAction,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// New or changed: the source cannot tell which (polling).
    Upsert,
    /// Every row of the table goes (`TRUNCATE`); `row` is empty.
    Truncate,
}

/// One row change.
///
/// `row` holds every column for inserts, updates and upserts; for a delete it holds at
/// least the primary-key columns (other columns may be `Null`). An update whose primary key
/// changed carries the old key in `old_key` (primary-key order), so the old row can be
/// found and removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: Op,
    pub row: Row,
    pub old_key: Option<Box<[Value]>>,
}

impl Change {
    pub fn upsert(row: Row) -> Self {
        Change {
            op: Op::Upsert,
            row,
            old_key: None,
        }
    }

    pub fn insert(row: Row) -> Self {
        Change {
            op: Op::Insert,
            row,
            old_key: None,
        }
    }

    pub fn update(row: Row, old_key: Option<Vec<Value>>) -> Self {
        Change {
            op: Op::Update,
            row,
            old_key: old_key.map(Vec::into_boxed_slice),
        }
    }

    pub fn delete(row: Row) -> Self {
        Change {
            op: Op::Delete,
            row,
            old_key: None,
        }
    }

    pub fn truncate() -> Self {
        Change {
            op: Op::Truncate,
            row: Vec::new(),
            old_key: None,
        }
    }

    /// Heap and inline bytes this change holds (see [`crate::value::row_bytes`]).
    pub fn bytes(&self) -> usize {
        crate::value::row_bytes(&self.row) + std::mem::size_of::<Change>()
            - std::mem::size_of::<Row>()
            + self
                .old_key
                .as_deref()
                .map_or(0, crate::value::values_bytes)
    }
}

/// Where a source is, as the source wrote it: opaque to everything else, which stores it
/// and hands it back on the next start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(pub serde_json::Value);

/// Changes of one table and the position that table is at once they are applied. A set may
/// hold no change at all: it then only moves the position.
#[derive(Debug)]
pub struct ChangeSet {
    pub table: TableId,
    pub changes: Vec<Change>,
    pub position: Position,
    /// Bytes the changes hold in memory.
    pub bytes: usize,
    /// When the newest change happened on the source, when the source knows it (the cursor
    /// time of a polled row, a binlog event's timestamp): what lag is measured from.
    pub source_time: Option<DateTime<Utc>>,
}

/// What the sink applies in one transaction: one or more tables' change sets.
///
/// `commit: false` marks a chunk of a source transaction too large to hold whole: the sink
/// applies it and keeps its transaction open for the next chunks; the positions are stored,
/// and the transaction committed, with the chunk that has `commit: true`.
#[derive(Debug)]
pub struct Batch {
    pub parts: Vec<ChangeSet>,
    pub commit: bool,
    /// Whole source transactions the batch completes (binlog capture; 0 when polling).
    pub transactions: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            parts: Vec::new(),
            commit: true,
            transactions: 0,
        }
    }
}

impl Batch {
    pub fn changes(&self) -> usize {
        self.parts.iter().map(|p| p.changes.len()).sum()
    }

    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}
