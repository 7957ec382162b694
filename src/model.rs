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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The source's default, as a SQL literal the way MariaDB's `information_schema` writes
    /// it (`'text'`, `42`, `NULL`) or an expression (`current_timestamp()`); `None` without
    /// one. What rows that existed before the column was added hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Set on the first shape after a rename: the column's name until then.
    #[serde(skip)]
    pub renamed_from: Option<String>,
    /// The target's type when `[[tables]] column_types` sets one (as PostgreSQL's
    /// `format_type` writes it); `None`: the type mapping's.
    #[serde(skip)]
    pub target_type: Option<String>,
}

impl Column {
    /// A nullable column without a default.
    pub fn new(name: &str, source_type: &str, kind: Kind) -> Self {
        Column {
            name: name.into(),
            source_type: source_type.into(),
            kind,
            nullable: true,
            null_on_zero_date: false,
            default: None,
            renamed_from: None,
            target_type: None,
        }
    }

    /// Whether NULL can arrive in this column, one way or the other.
    pub fn may_be_null(&self) -> bool {
        self.nullable || self.null_on_zero_date
    }
}

/// A secondary index of a source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The source's name for it.
    pub name: String,
    pub unique: bool,
    /// Column names, in index order.
    pub columns: Vec<String>,
}

/// A replicated table: its columns and its primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableModel {
    pub name: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub primary_key: Vec<usize>,
    /// The source's secondary indexes (not the primary key), for the target to have too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<Index>,
    /// The table's shape version: 1 as first seen, one more at each schema change followed
    /// (`sluice.schema_history`).
    #[serde(default = "first_version")]
    pub version: u32,
}

fn first_version() -> u32 {
    1
}

impl TableModel {
    /// Whether two models describe the same columns and key (versions and the source's
    /// spelling of types aside): a change between them needs nothing of the target.
    pub fn same_shape(&self, other: &TableModel) -> bool {
        self.primary_key == other.primary_key
            && self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| {
                a.name == b.name
                    && a.kind == b.kind
                    && a.nullable == b.nullable
                    && a.null_on_zero_date == b.null_on_zero_date
            })
    }

    /// Marks the columns of `self` (a table's new shape) that `old` had under another name:
    /// a column gone from `old` whose place (same position, same kind, same number of
    /// columns) a new name took. Polling sees only the shapes; binlog capture calls this too
    /// after taking the renames its ALTER statements name.
    pub fn infer_renames(&mut self, old: &TableModel) {
        if self.columns.len() != old.columns.len() {
            return;
        }
        let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        for (c, o) in self.columns.iter_mut().zip(&old.columns) {
            let new_name = old.column(&c.name).is_none();
            let gone = !names.contains(&o.name);
            if c.renamed_from.is_none() && new_name && gone && o.kind == c.kind {
                c.renamed_from = Some(o.name.clone());
            }
        }
    }

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
    /// The columns whose value the change may have changed: for a binlog update, those whose
    /// value differs between the row before and the row after; every column otherwise. The
    /// row still holds every column: this only says which of them need writing.
    pub changed: ColumnSet,
}

/// A set of a row's columns, by index, held in one word: columns 0 to 62 each have their
/// bit; the last bit stands for every column from 63 on (a change in any of them counts for
/// all of them), so a set can hold more columns than it names, never fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSet(u64);

impl ColumnSet {
    pub const ALL: ColumnSet = ColumnSet(u64::MAX);
    pub const NONE: ColumnSet = ColumnSet(0);

    fn bit(i: usize) -> u64 {
        1 << i.min(63)
    }

    pub fn insert(&mut self, i: usize) {
        self.0 |= Self::bit(i);
    }

    pub fn contains(self, i: usize) -> bool {
        self.0 & Self::bit(i) != 0
    }

    pub fn union(self, other: ColumnSet) -> ColumnSet {
        ColumnSet(self.0 | other.0)
    }
}

impl Change {
    pub fn upsert(row: Row) -> Self {
        Change {
            op: Op::Upsert,
            row,
            old_key: None,
            changed: ColumnSet::ALL,
        }
    }

    pub fn insert(row: Row) -> Self {
        Change {
            op: Op::Insert,
            row,
            old_key: None,
            changed: ColumnSet::ALL,
        }
    }

    pub fn update(row: Row, old_key: Option<Vec<Value>>) -> Self {
        Change {
            op: Op::Update,
            row,
            old_key: old_key.map(Vec::into_boxed_slice),
            changed: ColumnSet::ALL,
        }
    }

    /// The same change, saying which columns it changed (see [`Change::changed`]).
    pub fn changing(self, changed: ColumnSet) -> Self {
        Change { changed, ..self }
    }

    pub fn delete(row: Row) -> Self {
        Change {
            op: Op::Delete,
            row,
            old_key: None,
            changed: ColumnSet::ALL,
        }
    }

    pub fn truncate() -> Self {
        Change {
            op: Op::Truncate,
            row: Vec::new(),
            old_key: None,
            changed: ColumnSet::ALL,
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
    /// The table's shape changed on the source before these changes: the target follows
    /// (in the same transaction) before they are applied, and they are rows of this model.
    /// `None`: the shape the sink has.
    pub shape: Option<std::sync::Arc<TableModel>>,
    /// Every row here is read for the first time in an initial load that reads each key
    /// once (polling's load in primary-key order): none of them was written before by this
    /// load. With a target empty when the load began (its key deferred), a row a `where`
    /// filter does not keep cannot be there, and needs no delete.
    pub first_reads: bool,
    /// A chunk of a copy beside the binlog stream (with the table's changes merged after
    /// it): its table is not caught up, so it may commit on a target connection of its own,
    /// apart from the other tables' changes of the same batch (see `pipeline::side`).
    pub beside: bool,
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
/// The labels of `enum('a','b''c')` / `set(...)`, quotes undone.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[open + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                c => label.push(c),
            }
        }
        labels.push(label);
    }
    labels
}
