//! Binlog events into source transactions of changes.
//!
//! A transaction runs from `BEGIN` to its `XID` (or `COMMIT`); a statement outside one (DDL)
//! stands alone. Row events of the configured tables become changes: a write an insert, an
//! update an update (carrying the old primary key when it changed), a delete a delete; a
//! `TRUNCATE` of a configured table a truncate. A transaction is handed out whole when it
//! ends, with the position after it; one that grows past the chunk size is handed out in
//! chunks, the last one complete. Columns are matched by name (`binlog_row_metadata = FULL`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use tracing::debug;

use super::ddl::{column_renames, index_statement, tables_gone, truncated_table};
use super::table::BTable;
use super::{BinlogPos, Stored};
use crate::error::{Error, Result, Side};
use crate::model::{Change, ChangeSet, Position, TableId};
use crate::source::Txn;
use crate::value::Row;

/// How long the stream may stay silent (the server sends a heartbeat every second) before the
/// connection is taken for dead.
const SILENCE: Duration = Duration::from_secs(10);

/// What reading the stream produced.
pub(super) enum Out {
    Txn(Txn),
    /// Nothing arrived for a moment: the tables are caught up.
    Idle,
    /// A table's change could not be read: that table stops.
    Failed {
        table: TableId,
        error: Error,
    },
}

/// A table's columns in the binlog's row image: model column `i` is image column `cols[i]`.
struct Mapping {
    table: usize,
    cols: Vec<usize>,
}

/// The transaction being read.
struct OpenTxn {
    /// Where it started: a stream reconnected mid-transaction starts there again.
    start: BinlogPos,
    parts: Vec<ChangeSet>,
    /// Table (index into the source's tables) → part.
    index: HashMap<usize, usize>,
    bytes: usize,
    /// Chunks of it were handed out already.
    chunked: bool,
    /// Every table it changed, chunks handed out included: each gets the end position.
    touched: Vec<TableId>,
}

pub(super) struct Stream {
    stream: Option<BinlogStream>,
    /// Where the next connection starts: a transaction boundary.
    pub resume: BinlogPos,
    /// The file being read and the end of the last event read in it.
    file: String,
    last_end: u64,
    txn: Option<OpenTxn>,
    /// table id (from TABLE_MAP) → mapping, or `None` for tables not replicated.
    maps: HashMap<u64, Option<Mapping>>,
    database: String,
    /// The last transaction handed out ended here: `Idle` comes only after a moment of quiet.
    quiet_since: Option<Instant>,
    last_event: Instant,
    warned_ddl: std::collections::HashSet<String>,
    /// The connection's format description arrived (checksums are known from then on).
    described: bool,
    zero_dates: crate::config::ZeroDates,
    /// A connection to read a changed table's definition.
    meta: Option<sea_orm::sqlx::MySqlConnection>,
}

/// The binlog file sluice needs is gone: a permanent stop, saying how to start over.
fn purged(from: &BinlogPos, oldest: Option<&str>) -> Error {
    Error::Other(format!(
        "the source no longer has binlog file {} (needed from position {from}); its oldest is {}. The changes in between are lost to binlog capture: to start over, stop sluice, delete this pipeline's rows from sluice.replication_state and empty the target tables (they are snapshotted again), or keep binary logs longer (binlog_expire_logs_seconds) so that sluice can be down that long",
        from.file,
        oldest.unwrap_or("(none)")
    ))
}

fn source_err(context: &str, e: mysql_async::Error) -> Error {
    use mysql_async::Error as E;
    let transient = match &e {
        // An untrusted certificate, or TLS asked of a server without it: not fixed by waiting.
        E::Io(mysql_async::IoError::Io(_)) => true,
        E::Io(_) => false,
        E::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => false,
        E::Driver(_) => true,
        E::Server(s) => {
            // 1236: the binlog file is gone (purged): never fixed by waiting.
            s.code != 1236
                && (s.code == 1053 || s.message.to_ascii_lowercase().contains("shutdown"))
        }
        _ => false,
    };
    Error::Database {
        side: Side::Source,
        context: context.to_string(),
        message: match &e {
            E::Io(mysql_async::IoError::Io(_)) => crate::redact::redact_text(&e.to_string()),
            E::Io(_) | E::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => format!(
                "{}; {}",
                crate::redact::redact_text(&e.to_string()),
                crate::tls::hint(Side::Source)
            ),
            _ => crate::redact::redact_text(&e.to_string()),
        },
        code: match &e {
            E::Server(s) => Some(s.state.clone()),
            _ => None,
        },
        transient,
    }
}

impl Stream {
    pub fn new(resume: BinlogPos, database: String, zero_dates: crate::config::ZeroDates) -> Self {
        Stream {
            stream: None,
            file: resume.file.clone(),
            last_end: resume.pos,
            resume,
            txn: None,
            maps: HashMap::new(),
            database,
            quiet_since: None,
            last_event: Instant::now(),
            warned_ddl: Default::default(),
            described: false,
            zero_dates,
            meta: None,
        }
    }

    /// The last transaction boundary read.
    pub fn boundary(&self) -> BinlogPos {
        self.resume.clone()
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Drops the connection: the next read reconnects at the last boundary (a transaction
    /// cut short is read again from its start).
    pub fn reset(&mut self) {
        self.stream = None;
        if let Some(t) = self.txn.take() {
            self.resume = t.start;
        }
        self.file = self.resume.file.clone();
        self.last_end = self.resume.pos;
        self.maps.clear();
        self.meta = None;
    }

    async fn connect(&mut self, url: &str, server_id: u32) -> Result<()> {
        let (opts, plaintext) = crate::source::mysql::binlog_opts(url)?;
        let no_tls = |e: &mysql_async::Error| {
            matches!(
                e,
                mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
            )
        };
        let encrypted = opts.ssl_opts().is_some();
        let mut conn = match (mysql_async::Conn::new(opts).await, plaintext) {
            // ssl-mode=PREFERRED and a server without TLS: plaintext, as sqlx does.
            (Err(e), Some(plain)) if no_tls(&e) => {
                mysql_async::Conn::new(plain).await.map(|c| (c, false))
            }
            (r, _) => r.map(|c| (c, encrypted)),
        }
        .map(|(c, encrypted)| {
            crate::tls::note(Side::Source, url, "binlog stream", encrypted);
            c
        })
        .map_err(|e| source_err("connecting for the binlog stream", e))?;
        // The file to start from must still be on the server: never skip what was purged.
        let logs: Vec<mysql_async::Row> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| source_err("listing the binary logs (SHOW BINARY LOGS)", e))?;
        let names: Vec<String> = logs.iter().filter_map(|r| r.get::<String, _>(0)).collect();
        if !names.contains(&self.resume.file) {
            return Err(purged(&self.resume, names.first().map(String::as_str)));
        }
        // A heartbeat every second while the binlog is quiet: a dead connection shows.
        conn.query_drop(
            "SET @master_heartbeat_period = 1000000000, @source_heartbeat_period = 1000000000",
        )
        .await
        .map_err(|e| source_err("setting the binlog heartbeat", e))?;
        let request = BinlogStreamRequest::new(server_id)
            .with_filename(self.resume.file.as_bytes())
            .with_pos(self.resume.pos);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| source_err("requesting the binlog stream", e))?;
        debug!(from = %self.resume, "binlog stream opened");
        self.stream = Some(stream);
        self.described = false;
        self.file = self.resume.file.clone();
        self.last_end = self.resume.pos;
        self.last_event = Instant::now();
        Ok(())
    }

    /// Reads events until there is something to hand out. `chunk_bytes`: a transaction
    /// holding this much is handed out in chunks.
    pub async fn next(
        &mut self,
        url: &str,
        server_id: u32,
        tables: &mut [BTable],
        chunk_bytes: usize,
    ) -> Result<Out> {
        if self.stream.is_none() {
            self.connect(url, server_id).await?;
        }
        loop {
            // Right after a transaction, a short wait tells a burst from a quiet source.
            let wait = match (&self.txn, self.quiet_since) {
                (Some(_), _) => SILENCE,
                (None, Some(since)) if since.elapsed() < Duration::from_millis(2) => {
                    Duration::from_millis(2)
                }
                (None, _) => Duration::from_millis(250),
            };
            let stream = self.stream.as_mut().expect("connected above");
            let ev = match tokio::time::timeout(wait, stream.next()).await {
                Err(_) if self.txn.is_none() => {
                    if self.last_event.elapsed() > SILENCE {
                        return Err(Error::Database {
                            side: Side::Source,
                            context: "reading the binlog stream".into(),
                            message: format!(
                                "nothing (not even a heartbeat) for {} s",
                                SILENCE.as_secs()
                            ),
                            code: None,
                            transient: true,
                        });
                    }
                    self.quiet_since = None;
                    return Ok(Out::Idle);
                }
                Err(_) => {
                    return Err(Error::Database {
                        side: Side::Source,
                        context: "reading the binlog stream".into(),
                        message: format!("silent for {} s inside a transaction", SILENCE.as_secs()),
                        code: None,
                        transient: true,
                    })
                }
                Ok(None) => {
                    return Err(Error::Database {
                        side: Side::Source,
                        context: "reading the binlog stream".into(),
                        message: "the server ended the stream".into(),
                        code: None,
                        transient: true,
                    })
                }
                Ok(Some(Err(e))) => return Err(source_err("reading the binlog stream", e)),
                Ok(Some(Ok(ev))) => ev,
            };
            self.last_event = Instant::now();
            let header = ev.header();
            let end = u64::from(header.log_pos());
            let ts = header.timestamp();
            let data = ev
                .read_data()
                .map_err(|e| Error::Other(format!("a binlog event could not be read: {e}")))?;
            let mut out = None;
            match data {
                // The first rotate of a connection comes before the format description, so its
                // name still carries the event's checksum bytes: the file is the one asked
                // for. Every later rotate (the server moving on to the next file, real or
                // artificial after a restart's STOP) names the next file.
                Some(EventData::RotateEvent(_)) if !self.described => continue,
                Some(EventData::RotateEvent(r)) => {
                    self.file = r.name().into_owned();
                    self.last_end = r.position();
                    if self.txn.is_none() {
                        self.resume = BinlogPos {
                            file: self.file.clone(),
                            pos: self.last_end,
                        };
                    }
                    continue;
                }
                Some(EventData::FormatDescriptionEvent(_)) => {
                    self.described = true;
                    continue;
                }
                Some(EventData::HeartbeatEvent) => continue,
                Some(EventData::QueryEvent(q)) => {
                    let sql = q.query();
                    let sql = sql.trim();
                    if sql.eq_ignore_ascii_case("BEGIN") {
                        self.txn = Some(OpenTxn {
                            start: BinlogPos {
                                file: self.file.clone(),
                                pos: self.last_end,
                            },
                            parts: Vec::new(),
                            index: HashMap::new(),
                            bytes: 0,
                            chunked: false,
                            touched: Vec::new(),
                        });
                    } else if sql.eq_ignore_ascii_case("COMMIT") {
                        out = self.end_txn(end, ts, tables);
                    } else if !sql.starts_with('#') && self.txn.is_none() {
                        // A statement on its own (DDL): a transaction of its own.
                        let schema = q.schema().into_owned();
                        out = self.statement(sql, &schema, end, ts, tables);
                    }
                }
                Some(EventData::TableMapEvent(t)) => {
                    let id = t.table_id();
                    let found = (t.database_name() == self.database.as_str())
                        .then(|| {
                            tables
                                .iter()
                                .position(|b| b.spec.model.name == t.table_name())
                        })
                        .flatten();
                    match (found, self.maps.get(&id)) {
                        (Some(i), Some(Some(m))) if m.table == i => {}
                        (Some(i), _) => {
                            self.maps.insert(
                                id,
                                Some(Mapping {
                                    table: i,
                                    cols: Vec::new(),
                                }),
                            );
                        }
                        (None, _) => {
                            self.maps.insert(id, None);
                        }
                    }
                }
                Some(EventData::RowsEvent(rows)) => {
                    if let Some(failed) = self.follow_shape(url, &rows, tables).await? {
                        return Ok(failed);
                    }
                    if let Some(failed) = self.rows(&rows, tables)? {
                        return Ok(failed);
                    }
                    if let Some(t) = &self.txn {
                        if t.bytes >= chunk_bytes {
                            out = Some(self.chunk());
                        }
                    }
                }
                Some(EventData::XidEvent(_)) => {
                    out = self.end_txn(end, ts, tables);
                }
                _ => {}
            }
            if end > 0 {
                self.last_end = end;
                if self.txn.is_none() {
                    self.resume = BinlogPos {
                        file: self.file.clone(),
                        pos: end,
                    };
                }
            }
            if let Some(o) = out {
                return Ok(o);
            }
        }
    }

    /// At the first rows event after a table map: when the map differs from the one the
    /// table's model was matched against (or, for the first map, names other columns), the
    /// table changed shape at this point of the binlog. Its new model is built from the map
    /// (names, types, order) with each column's definition taken from the source's
    /// `information_schema` when it matches the map, else from the model so far; the changes
    /// from here on are decoded in it and carry it, so the target follows in the same
    /// transaction as the first of them. A column whose type here neither matches stops the
    /// table (it changed again since this point, and its type here is unknown).
    async fn follow_shape(
        &mut self,
        url: &str,
        ev: &RowsEventData<'_>,
        tables: &mut [BTable],
    ) -> Result<Option<Out>> {
        let id = ev.table_id();
        let Some(Some(mapping)) = self.maps.get(&id) else {
            return Ok(None);
        };
        if !mapping.cols.is_empty() {
            return Ok(None);
        }
        let ti = mapping.table;
        let t = &mut tables[ti];
        if t.done || t.handle.stopped() {
            return Ok(None);
        }
        let Some(tme) = self.stream.as_ref().and_then(|s| s.get_tme(id)) else {
            return Ok(None);
        };
        let mut sig = Vec::new();
        mysql_common::proto::MySerialize::serialize(tme, &mut sig);
        // Past the table id (6 bytes) and flags (2): a table reopened gets a new id.
        let sig = sig.split_off(8.min(sig.len()));
        if t.table_map.as_ref() == Some(&sig) {
            if t.indexes_stale {
                t.indexes_stale = false;
                if self.meta.is_none() {
                    self.meta = Some(crate::source::mysql::connect(url).await?);
                }
                let conn = self.meta.as_mut().expect("connected above");
                let now =
                    crate::source::mysql::introspect::indexes(conn, &t.spec.model.name).await?;
                let names: Vec<&str> = t
                    .spec
                    .model
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                let now: Vec<crate::model::Index> = now
                    .into_iter()
                    .filter(|i| i.columns.iter().all(|c| names.contains(&c.as_str())))
                    .collect();
                if now != t.spec.model.indexes {
                    let model = std::sync::Arc::make_mut(&mut t.spec.model);
                    model.indexes = now;
                    model.version += 1;
                    tracing::info!(table = %model.name, "the source table's indexes changed; the target's follow");
                    t.pending_shape = Some(t.spec.model.clone());
                }
            }
            return Ok(None);
        }
        let Some(first) = ev.rows(tme).next() else {
            return Ok(None);
        };
        let image = match first {
            Ok((b, a)) => a.or(b),
            Err(_) => None,
        };
        let Some(image) = image else {
            return Ok(None);
        };
        let cols = image.columns_ref();
        let names: Vec<String> = cols.iter().map(|c| c.name_str().into_owned()).collect();
        if names.first().is_some_and(|n| n.starts_with('@')) {
            // No column names (binlog_row_metadata is not FULL): map_columns says so.
            return Ok(None);
        }
        let model = t.spec.model.clone();
        let fits = |kind: crate::model::Kind, i: usize| {
            let c = &cols[i];
            let ty = tme
                .get_column_type(i)
                .ok()
                .flatten()
                .unwrap_or_else(|| c.column_type());
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            super::decode::fits(
                kind,
                ty,
                meta,
                c.flags()
                    .contains(mysql_async::consts::ColumnFlags::UNSIGNED_FLAG),
                c.character_set(),
            )
        };
        let same = names.len() == model.columns.len()
            && model
                .columns
                .iter()
                .enumerate()
                .all(|(i, c)| names[i] == c.name && fits(c.kind, i));
        if same {
            t.table_map = Some(sig);
            return Ok(None);
        }
        // The table changed: its definition now, matched against the map.
        if self.meta.is_none() {
            self.meta = Some(crate::source::mysql::connect(url).await?);
        }
        let conn = self.meta.as_mut().expect("connected above");
        if crate::source::mysql::shape_fingerprint(conn, &model.name)
            .await?
            .is_none()
        {
            return Ok(Some(Out::Failed {
                table: t.id,
                error: crate::source::mysql::table_gone(&model.name),
            }));
        }
        let (now, key) = match crate::source::mysql::introspect_keyed(conn, &t.config).await {
            Ok(x) => x,
            Err(e) if e.is_retryable() => return Err(e),
            Err(error) => return Ok(Some(Out::Failed { table: t.id, error })),
        };
        let mut columns = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let current = now
                .columns
                .iter()
                .find(|c| &c.name == name && fits(c.kind, i));
            let before = model
                .columns
                .iter()
                .find(|c| &c.name == name && fits(c.kind, i))
                .map(|c| crate::source::mysql::introspect::SourceColumn {
                    name: c.name.clone(),
                    column_type: c.source_type.clone(),
                    kind: c.kind,
                    nullable: c.nullable,
                    default: c.default.clone(),
                });
            match current.cloned().or(before) {
                Some(c) => columns.push(c),
                None => {
                    return Ok(Some(Out::Failed {
                        table: t.id,
                        error: Error::Schema(format!(
                            "table {:?} changed shape at binlog position {}:{} and again since: column {name:?} there matches neither its definition now nor the one sluice had, so its values there cannot be read. Restart sluice once the table's definition no longer changes; if this repeats, copy the table again (delete its row from sluice.replication_state and empty the target table)",
                            model.name, self.file, self.last_end
                        )),
                    }))
                }
            }
        }
        let key_names: Vec<String> = key.iter().map(|&i| now.columns[i].name.clone()).collect();
        let key: Vec<usize> = if key_names.iter().all(|k| names.contains(k)) {
            key_names
                .iter()
                .filter_map(|k| names.iter().position(|n| n == k))
                .collect()
        } else {
            model
                .primary_key
                .iter()
                .filter_map(|&i| names.iter().position(|n| *n == model.columns[i].name))
                .collect()
        };
        let source = crate::source::mysql::introspect::SourceTable {
            name: model.name.clone(),
            columns,
            primary_key: key.iter().map(|&i| names[i].clone()).collect(),
            // The indexes now whose columns the table has at this point.
            indexes: now
                .indexes
                .iter()
                .filter(|i| i.columns.iter().all(|c| names.contains(c)))
                .cloned()
                .collect(),
        };
        let (mut spec, keyset, decoders) =
            match super::shape(&source, key, self.zero_dates, model.version + 1) {
                Ok(x) => x,
                Err(error) => return Ok(Some(Out::Failed { table: t.id, error })),
            };
        t.table_map = Some(sig);
        if spec.model.same_shape(&model) {
            return Ok(None);
        }
        let new = std::sync::Arc::make_mut(&mut spec.model);
        // Renames the ALTER statements named, then those their places tell.
        for (from, to) in std::mem::take(&mut t.renames) {
            let had = model.column(&from).is_some() && new.column(&from).is_none();
            if let Some(c) = new.columns.iter_mut().find(|c| c.name == to) {
                if had && model.column(&to).is_none() {
                    c.renamed_from = Some(from);
                }
            }
        }
        new.infer_renames(&model);
        tracing::info!(
            table = %model.name,
            version = new.version,
            at = %format!("{}:{}", self.file, self.last_end),
            columns = %new.columns.iter().map(|c| format!("{} {}", c.name, c.source_type)).collect::<Vec<_>>().join(", "),
            "the source table changed shape at this point of the binlog; its changes from here on are in the new shape"
        );
        t.pending_shape = Some(spec.model.clone());
        t.spec = spec;
        t.keyset = keyset;
        t.decoders = decoders;
        Ok(None)
    }

    /// Decodes a rows event of a replicated table into the open transaction. Returns a table
    /// failure when a row cannot be read.
    fn rows(&mut self, ev: &RowsEventData<'_>, tables: &mut [BTable]) -> Result<Option<Out>> {
        let id = ev.table_id();
        let Some(Some(mapping)) = self.maps.get_mut(&id) else {
            return Ok(None);
        };
        let ti = mapping.table;
        let t = &mut tables[ti];
        if t.done || t.handle.stopped() {
            return Ok(None);
        }
        let Some(txn) = self.txn.as_mut() else {
            return Ok(None);
        };
        // Transactions that end at or before the table's position are already applied; a
        // position is a boundary, so that is every transaction starting before it.
        if t.from.as_ref().is_some_and(|from| txn.start < *from) {
            return Ok(None);
        }
        let tme = self
            .stream
            .as_ref()
            .and_then(|s| s.get_tme(id))
            .ok_or_else(|| {
                Error::Other(format!(
                    "a rows event of table #{id} came without its table map"
                ))
            })?;
        let fail = |error: Error| Ok(Some(Out::Failed { table: t.id, error }));
        let mut changes = Vec::new();
        let mut bytes = 0;
        for r in ev.rows(tme) {
            let (before, after) = match r {
                Ok(x) => x,
                Err(e) => {
                    return fail(Error::BadRow {
                        table: t.spec.model.name.clone(),
                        key: "?".into(),
                        reason: format!("its binlog row image cannot be read: {e}"),
                    })
                }
            };
            if mapping.cols.is_empty() {
                let image = after
                    .as_ref()
                    .or(before.as_ref())
                    .expect("a row has an image");
                match map_columns(t, image) {
                    Ok(cols) => mapping.cols = cols,
                    Err(e) => return fail(e),
                }
            }
            let decode = |img: &BinlogRow| -> Result<Row> { decode_row(t, &mapping.cols, img) };
            let change = match (before, after) {
                (None, Some(a)) => match decode(&a) {
                    Ok(row) => Change::insert(row),
                    Err(e) => return fail(e),
                },
                (Some(b), Some(a)) => match (decode(&b), decode(&a)) {
                    (Ok(old), Ok(new)) => {
                        let (ok, nk) = (t.spec.model.key_of(&old), t.spec.model.key_of(&new));
                        Change::update(new, (ok != nk).then_some(ok))
                    }
                    (Err(e), _) | (_, Err(e)) => return fail(e),
                },
                (Some(b), None) => match decode(&b) {
                    Ok(row) => Change::delete(row),
                    Err(e) => return fail(e),
                },
                (None, None) => continue,
            };
            bytes += change.bytes();
            changes.push(change);
        }
        let table = t.id;
        if !txn.touched.contains(&table) {
            txn.touched.push(table);
        }
        let part = match txn.index.get(&ti) {
            Some(&p) => p,
            None => {
                txn.index.insert(ti, txn.parts.len());
                txn.parts.push(ChangeSet {
                    table,
                    changes: Vec::new(),
                    position: Position(serde_json::Value::Null),
                    bytes: 0,
                    source_time: None,
                    shape: t.pending_shape.take(),
                });
                txn.parts.len() - 1
            }
        };
        txn.parts[part].changes.extend(changes);
        txn.parts[part].bytes += bytes;
        txn.bytes += bytes;
        Ok(None)
    }

    /// Hands out what the open transaction holds so far, keeping it open.
    fn chunk(&mut self) -> Out {
        let txn = self.txn.as_mut().expect("inside a transaction");
        txn.chunked = true;
        txn.index.clear();
        txn.bytes = 0;
        Out::Txn(Txn {
            parts: std::mem::take(&mut txn.parts),
            complete: false,
        })
    }

    /// The open transaction ended at `end`: hands it out with its position.
    fn end_txn(&mut self, end: u64, ts: u32, tables: &[BTable]) -> Option<Out> {
        let txn = self.txn.take()?;
        let pos = BinlogPos {
            file: self.file.clone(),
            pos: end,
        };
        self.resume = pos.clone();
        self.quiet_since = Some(Instant::now());
        if txn.parts.is_empty() && !txn.chunked {
            return None;
        }
        let mut parts = txn.parts;
        // Tables changed only in chunks already handed out: their position moves too.
        for table in txn.touched {
            if !parts.iter().any(|p| p.table == table) {
                parts.push(ChangeSet {
                    table,
                    changes: Vec::new(),
                    position: Position(serde_json::Value::Null),
                    bytes: 0,
                    source_time: None,
                    shape: None,
                });
            }
        }
        Some(Out::Txn(finish(parts, &pos, ts, tables)))
    }

    /// A statement outside a transaction: TRUNCATE of a replicated table becomes a change; a
    /// replicated table dropped or renamed away stops (or just ends, when a pattern took it);
    /// an ALTER, CREATE INDEX or DROP INDEX on one is noted (renames, index changes) for the
    /// table's next change, where its new shape is followed (see `follow_shape`).
    fn statement(
        &mut self,
        sql: &str,
        schema: &str,
        end: u64,
        ts: u32,
        tables: &mut [BTable],
    ) -> Option<Out> {
        let pos = BinlogPos {
            file: self.file.clone(),
            pos: end,
        };
        if let Some((db, name)) = truncated_table(sql) {
            let db = db.unwrap_or_else(|| schema.to_string());
            if db == self.database {
                if let Some(t) = tables.iter().find(|t| t.spec.model.name == name) {
                    if t.done || t.handle.stopped() || t.from.as_ref().is_some_and(|f| pos <= *f) {
                        return None;
                    }
                    self.quiet_since = Some(Instant::now());
                    let part = ChangeSet {
                        table: t.id,
                        changes: vec![Change::truncate()],
                        position: Position(serde_json::Value::Null),
                        bytes: 0,
                        source_time: None,
                        shape: None,
                    };
                    return Some(Out::Txn(finish(vec![part], &pos, ts, tables)));
                }
            }
            return None;
        }
        // A replicated table dropped or renamed away (not swapped for another of the same
        // name, as online schema change tools do): it stops, saying so.
        for (db, name) in tables_gone(sql) {
            let db = db.unwrap_or_else(|| schema.to_string());
            if db != self.database {
                continue;
            }
            if let Some(t) = tables.iter().find(|t| t.spec.model.name == name) {
                if t.done || t.handle.stopped() || t.from.as_ref().is_some_and(|f| pos <= *f) {
                    continue;
                }
                return Some(Out::Failed {
                    table: t.id,
                    error: crate::source::mysql::table_gone(&name),
                });
            }
        }
        // Columns an ALTER renames: the next shape change of the table uses them; and any
        // ALTER, CREATE INDEX or DROP INDEX may change its indexes.
        let altered = column_renames(sql).or_else(|| index_statement(sql).map(|t| (t, Vec::new())));
        if let Some(((db, name), renames)) = altered {
            let db = db.unwrap_or_else(|| schema.to_string());
            if db == self.database {
                if let Some(t) = tables.iter_mut().find(|t| t.spec.model.name == name) {
                    t.renames.extend(renames);
                    t.indexes_stale = true;
                }
            }
        }
        for t in tables.iter() {
            let name = &t.spec.model.name;
            if sql.contains(name.as_str()) && self.warned_ddl.insert(name.clone()) {
                tracing::info!(table = %name, statement = %sql.chars().take(200).collect::<String>(), "a statement on a replicated table; if it changed the table's columns, the target follows with the table's next change");
            }
        }
        None
    }
}

/// A transaction's commit time, for lag: the binlog stamps events in whole seconds, so
/// within the event's second the moment sluice read it stands for it (exact to a few
/// milliseconds when the stream is caught up); an event read later than its second (a
/// backlog) is taken at the end of that second.
fn commit_time(ts: u32, read_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let start = DateTime::from_timestamp(i64::from(ts), 0)?;
    let end = start + chrono::Duration::microseconds(999_999);
    Some(read_at.clamp(start, end))
}

/// Sets the positions (the transaction's end) and commit time of a transaction's parts.
fn finish(mut parts: Vec<ChangeSet>, pos: &BinlogPos, ts: u32, _tables: &[BTable]) -> Txn {
    let position = Stored {
        binlog: pos.clone(),
        snapshot: None,
    }
    .position();
    let at = commit_time(ts, Utc::now());
    for p in &mut parts {
        p.position = position.clone();
        p.source_time = at;
    }
    Txn {
        parts,
        complete: true,
    }
}

/// Where each model column sits in the row image, by name; refuses an image that lacks one.
fn map_columns(t: &BTable, image: &BinlogRow) -> Result<Vec<usize>> {
    let names: Vec<String> = image
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    t.spec
        .model
        .columns
        .iter()
        .map(|c| {
            names.iter().position(|n| *n == c.name).ok_or_else(|| {
                let unnamed = names.first().is_some_and(|n| n.starts_with('@'));
                Error::Schema(format!(
                    "table {:?}: column {:?} is not in the binlog's row image ({}); {}",
                    t.spec.model.name,
                    c.name,
                    names.join(", "),
                    if unnamed {
                        "the binlog carries no column names: SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf), then restart sluice"
                    } else {
                        "the table's columns here differ from the shape sluice followed to this point; restart sluice: it resumes from the shape recorded in sluice.schema_history and follows the changes since in order"
                    }
                ))
            })
        })
        .collect()
}

/// One row image as a model row.
fn decode_row(t: &BTable, cols: &[usize], image: &BinlogRow) -> Result<Row> {
    let model = &t.spec.model;
    let mut row = Vec::with_capacity(cols.len());
    for (i, &j) in cols.iter().enumerate() {
        match t.decoders[i].decode(image.as_ref(j)) {
            Ok(v) => row.push(v),
            Err(reason) => {
                let key = model
                    .primary_key
                    .iter()
                    .map(|&k| {
                        let v = t.decoders[k]
                            .decode(image.as_ref(cols[k]))
                            .map(|v| v.display())
                            .unwrap_or_else(|_| "?".into());
                        format!("{}={v}", model.columns[k].name)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::BadRow {
                    table: model.name.clone(),
                    key,
                    reason: format!(
                        "column {:?} ({}): {reason}",
                        model.columns[i].name, model.columns[i].source_type
                    ),
                });
            }
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_times_are_read_times_within_the_event_second() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ts = at("2026-11-25T10:00:00Z").timestamp() as u32;
        // Read during its second: the read time.
        assert_eq!(
            commit_time(ts, at("2026-11-25T10:00:00.250Z")),
            Some(at("2026-11-25T10:00:00.250Z"))
        );
        // Read later (a backlog): the end of its second.
        assert_eq!(
            commit_time(ts, at("2026-11-25T10:05:00Z")),
            Some(at("2026-11-25T10:00:00.999999Z"))
        );
        // A clock behind the server's: the event's second.
        assert_eq!(
            commit_time(ts, at("2026-11-25T09:59:59Z")),
            Some(at("2026-11-25T10:00:00Z"))
        );
    }
}
