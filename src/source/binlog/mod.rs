//! Binlog capture: a consistent snapshot of each table that has no position yet, then the
//! row-based binary log from there, whole source transactions at a time.
//!
//! # Layout
//! - [`checks`]: what the server must be set to (ROW format, FULL row image, FULL row
//!   metadata) and the privileges capture needs, refused at start with how to fix them.
//! - `source`: the [`BinlogSource`]: a new pipeline's snapshots first, then the stream; a
//!   table added later copied beside the stream, a chunk at a time; positions.
//! - `table`: a table it serves (`BTable`), shared by the source and the stream.
//! - `snapshot`: the initial copy, in primary-key order, inside one `START TRANSACTION WITH
//!   CONSISTENT SNAPSHOT` whose binlog position MariaDB reports exactly
//!   (`binlog_snapshot_file` / `binlog_snapshot_position`); and the chunks of a copy beside
//!   the stream, each in a snapshot of its own (`Chunker`).
//! - `stream`: events into transactions of changes (inserts, updates with the old key when
//!   it changed, deletes, TRUNCATE): the event loop, and what a statement means for the
//!   tables. It uses:
//!   - `connection`: the binlog connection (connect as a replica that understands MariaDB's
//!     GTID events; by file and offset on the server that wrote the position, by GTID on
//!     another of its topology, refusing one whose history does not hold it; purged files,
//!     heartbeat and silence, errors);
//!   - `gtid`: MariaDB's GTID event, XA ids (from XA_PREPARE events and XA statements);
//!   - `txn`: the open transaction, handed out whole or in chunks;
//!   - `xa`: XA transactions prepared, held until their commit, and how far positions move
//!     meanwhile;
//!   - `rows`: row images matched to the model's columns and decoded into changes;
//!   - `shape`: following a table's definition changes (the table map, then the source's
//!     definition);
//!   - `ddl`: the DDL statements that matter (TRUNCATE, DROP/RENAME TABLE, column renames,
//!     index changes) recognized from their text.
//!   - `events`: the events it does not apply: their type names, the table of a rows event
//!     that cannot be read (that table stops), and the rest skipped but counted
//!     (`sluice_binlog_events_skipped_total`). MariaDB's compressed events
//!     (`log_bin_compress`) are read as the plain ones by the vendored mysql_common.
//! - `position`: a position (file and offset, the GTID state there, the server's id), and
//!   GTID states in MariaDB's and MySQL's formats.
//! - [`decode`]: row images into the same values polling reads; [`charset`]: text of every
//!   character set, as a SELECT reads it.
//!
//! # Positions
//! A table's position is `{"binlog": {"file": …, "pos": …, "gtid": …, "server_id": …}}`:
//! every source transaction that ends at or before it is applied, every one after it is not.
//! On the server whose binlog the file is, transactions are placed by file and offset; on
//! another (after a failover) by the GTID state (`stream::covered`). While its snapshot runs it
//! is `{"binlog": <where the snapshot started>, "snapshot": {"after": [primary key]}}`: rows
//! up to that key are copied. The stream starts at the oldest position of all tables and
//! skips, for each table, the transactions that end at or before its own position; a
//! snapshot resumed after a crash re-reads the binlog from where the first one started, so
//! every change since is applied again over the rows copied (row images are whole, so
//! replaying them converges on the source's state).

pub mod charset;
pub mod checks;
mod connection;
mod ddl;
pub mod decode;
mod events;
mod gtid;
mod position;
mod rows;
mod shape;
mod snapshot;
mod source;
mod stream;
mod table;
mod txn;
mod xa;

use sea_orm::sqlx::{self, MySqlConnection, Row as _};
use serde::{Deserialize, Serialize};

use self::decode::ColumnDecoder;
use super::mysql::{self, ReadSpec};
use super::poll::keyset::Keyset;
use crate::config::{Settings, TableSettings};
use crate::error::{Error, Result, Side};
use crate::model::{Position, TableModel};
use crate::value::Value;

pub use self::position::{BinlogPos, GroupGtid, GtidState};
pub use self::source::BinlogSource;

/// A binlog-capture position, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub binlog: BinlogPos,
    /// Present while the table's snapshot runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
}

/// How far a snapshot got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// Primary key of the last row copied; `None` before the first.
    pub after: Option<Vec<Value>>,
    /// Rows copied so far, and in how many chunks (pages, for a copy before the stream).
    /// Positions written before sluice counted them read 0.
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub chunks: u64,
    /// When the copy's first chunk was read: with `rows`, the copy's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Copied beside the stream: the table's changes are applied up to the binlog position
    /// as the copy goes (before the stream, they follow from it once the copy is done).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub beside: bool,
}

impl SnapshotProgress {
    /// A chunk of `rows` rows, the last of them keyed `after`, was copied.
    pub fn copied(&mut self, after: Option<Vec<Value>>, rows: usize) {
        if after.is_some() {
            self.after = after;
        }
        self.rows += rows as u64;
        self.chunks += 1;
        self.started_at.get_or_insert_with(chrono::Utc::now);
    }
}

impl Stored {
    pub fn position(&self) -> Position {
        Position(serde_json::to_value(self).expect("positions serialise"))
    }

    /// Reads a stored position, refusing one another capture mode wrote.
    pub fn decode(t: &TableModel, p: &Position) -> Result<Stored> {
        serde_json::from_value(p.0.clone()).map_err(|_| {
            Error::Schema(format!(
                "table {:?}: its stored position ({}) was not written by binlog capture, and starting from it would keep the rows deleted on the source while polling could not see them. To move the table to binlog capture, either delete its row from sluice.replication_state and empty its target table (TRUNCATE): it is snapshotted again; or, to keep the target readable meanwhile, delete only that row, then run `sluice run --once` (a snapshot over the existing rows), `sluice verify --table {} --repair` (it removes the stale rows) and `sluice run` (docs: Binlog capture › Switching from polling, docs/src/capture/binlog.md)",
                t.name, p.0, t.name
            ))
        })
    }
}

/// A binlog position for `status`: `mysql-bin.000012:4567`, and the snapshot's progress.
pub fn describe(s: &Stored) -> String {
    let Some(p) = &s.snapshot else {
        return format!("binlog {}", s.binlog);
    };
    let (what, then) = if p.beside {
        ("copy beside the stream", "its changes applied up to binlog")
    } else {
        ("snapshot", "then binlog from")
    };
    match &p.after {
        None => format!("{what} starting ({then} {})", s.binlog),
        Some(k) => format!(
            "{what} after key ({}) ({then} {})",
            k.iter().map(Value::display).collect::<Vec<_>>().join(", "),
            s.binlog
        ),
    }
}

/// What start-up learnt of a table captured from the binlog.
#[derive(Debug)]
pub struct BinlogPlan {
    pub spec: ReadSpec,
    /// The primary key, as the keyset the snapshot reads in.
    pub keyset: Keyset,
    /// One per model column.
    pub decoders: Vec<ColumnDecoder>,
    pub estimated_rows: u64,
    pub avg_row_bytes: u64,
    /// Its foreign keys (as the child): their cascades leave no row events.
    pub foreign_keys: Vec<mysql::introspect::ForeignKeyInfo>,
}

/// Introspects a table for binlog capture: its columns and primary key (refused without
/// one, as in polling).
pub async fn plan(
    conn: &mut MySqlConnection,
    settings: &Settings,
    t: &TableSettings,
) -> Result<BinlogPlan> {
    let (source, key) = mysql::introspect_keyed(conn, t, true).await?;
    let (spec, keyset, decoders) = shape(&source, key, settings.source.zero_dates, 1)?;
    let stats = mysql::table_stats(conn, &t.name).await?;
    let foreign_keys = mysql::introspect::foreign_keys(conn, &t.name).await?;
    Ok(BinlogPlan {
        spec,
        keyset,
        decoders,
        estimated_rows: stats.rows,
        avg_row_bytes: stats.avg_row_bytes,
        foreign_keys,
    })
}

/// How a table of this shape is read: its spec (snapshot reads), its key as a keyset, and a
/// decoder per column (row images). `version`: the shape's.
pub(crate) fn shape(
    source: &mysql::introspect::SourceTable,
    key: Vec<usize>,
    zero_dates: crate::config::ZeroDates,
    version: u32,
) -> Result<(ReadSpec, Keyset, Vec<ColumnDecoder>)> {
    let names: Vec<String> = key
        .iter()
        .map(|&i| source.columns[i].name.clone())
        .collect();
    let keyset = Keyset::resolve(source, &names, &key)?;
    let mut spec = ReadSpec::new(source, key.clone(), zero_dates, &key);
    std::sync::Arc::make_mut(&mut spec.model).version = version;
    let decoders = spec
        .model
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| ColumnDecoder::new(c, spec.zero_date_to_null(i)))
        .collect();
    Ok((spec, keyset, decoders))
}

impl BinlogPlan {
    /// Reads in `model`, a shape recorded earlier: the target's rows are in it, and the
    /// stream (which may start before the source's later changes) follows on from it.
    pub fn start_in(
        &mut self,
        model: &TableModel,
        zero_dates: crate::config::ZeroDates,
    ) -> Result<()> {
        let source = mysql::introspect::SourceTable::from_model(model);
        let (spec, keyset, decoders) = shape(
            &source,
            model.primary_key.clone(),
            zero_dates,
            model.version,
        )?;
        self.spec = spec;
        self.keyset = keyset;
        self.decoders = decoders;
        Ok(())
    }
}

/// The server's current binlog position (`SHOW MASTER STATUS`; `SHOW BINARY LOG STATUS` on
/// MySQL 8.2 and later, which dropped the former).
pub async fn current_position(
    conn: &mut MySqlConnection,
    flavor: mysql::Flavor,
) -> Result<BinlogPos> {
    let sql = if !flavor.mariadb && (flavor.major, flavor.minor) >= (8, 2) {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    };
    let row = sqlx::query(sql)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| Error::db(Side::Source, format!("reading the binlog position ({sql})"), &e))?
        .ok_or_else(|| {
            Error::Config(
                "the source has no binary log (SHOW MASTER STATUS is empty); binlog capture needs log_bin on: add `log_bin = mysql-bin` to [mysqld] in its my.cnf and restart it (scripts/services.sh does this for the local server)".into(),
            )
        })?;
    let file: String = row
        .try_get::<String, _>(0)
        .or_else(|_| {
            row.try_get::<Vec<u8>, _>(0)
                .map(|b| String::from_utf8_lossy(&b).into())
        })
        .map_err(|e| Error::db(Side::Source, "reading the binlog file name", &e))?;
    let pos: u64 = row
        .try_get::<u64, _>(1)
        .or_else(|_| row.try_get::<i64, _>(1).map(|p| p as u64))
        .map_err(|e| Error::db(Side::Source, "reading the binlog position", &e))?;
    let mut at = BinlogPos::at(file, pos);
    // MySQL's row carries the GTID set executed there (MariaDB's has no such column).
    if !flavor.mariadb {
        at.gtid = row
            .try_get::<String, _>(4)
            .ok()
            .and_then(|s| GtidState::parse(&s));
    }
    Ok(at)
}

/// The server's identity: its `server_id`, and MySQL's `server_uuid`.
pub async fn server_identity(
    conn: &mut MySqlConnection,
    flavor: mysql::Flavor,
) -> Result<(u32, Option<String>)> {
    let sql = if flavor.mariadb {
        "SELECT CAST(@@server_id AS UNSIGNED), NULL"
    } else {
        "SELECT CAST(@@server_id AS UNSIGNED), CAST(@@server_uuid AS CHAR)"
    };
    let row = sqlx::query(sql).fetch_one(&mut *conn).await.map_err(|e| {
        Error::db(
            Side::Source,
            "reading the server's identity (@@server_id)",
            &e,
        )
    })?;
    let id = row
        .try_get::<u64, _>(0)
        .map_err(|e| Error::db(Side::Source, "reading @@server_id", &e))?;
    Ok((
        id as u32,
        row.try_get::<Option<String>, _>(1).ok().flatten(),
    ))
}

/// The binlog files the server still has, oldest first, with their sizes.
pub async fn binary_logs(conn: &mut MySqlConnection) -> Result<Vec<(String, u64)>> {
    let rows = sqlx::query("SHOW BINARY LOGS")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| {
            Error::db(
                Side::Source,
                "listing the binary logs (SHOW BINARY LOGS)",
                &e,
            )
        })?;
    rows.iter()
        .map(|r| {
            let name: String = r
                .try_get::<String, _>(0)
                .or_else(|_| {
                    r.try_get::<Vec<u8>, _>(0)
                        .map(|b| String::from_utf8_lossy(&b).into())
                })
                .map_err(|e| Error::db(Side::Source, "reading SHOW BINARY LOGS", &e))?;
            let size: u64 = r
                .try_get::<u64, _>(1)
                .or_else(|_| r.try_get::<i64, _>(1).map(|p| p as u64))
                .unwrap_or(0);
            Ok((name, size))
        })
        .collect()
}

/// Bytes of binlog between `from` and the end of `logs` (the server's files).
pub fn bytes_behind(from: &BinlogPos, logs: &[(String, u64)]) -> u64 {
    let mut behind = 0;
    let mut counting = false;
    for (name, size) in logs {
        if *name == from.file {
            counting = true;
            behind += size.saturating_sub(from.pos);
        } else if counting {
            behind += size;
        }
    }
    behind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_behind_counts_from_the_position_to_the_end() {
        let p = BinlogPos::at;
        assert_eq!(
            bytes_behind(
                &p("b.2", 100),
                &[("b.1".into(), 500), ("b.2".into(), 300), ("b.3".into(), 50)]
            ),
            250
        );
    }
}
