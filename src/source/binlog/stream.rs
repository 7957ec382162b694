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

use mysql_async::binlog::events::{Event, EventData, RowsEventData};

use super::connection::{Connection, SILENCE};
use super::ddl::{column_renames, index_statement, tables_gone, truncated_table};
use super::events;
use super::rows::Mapping;
use super::shape::ShapeFollower;
use super::table::BTable;
use super::txn::{finish, part, OpenTxn, Out};
use super::BinlogPos;
use crate::error::{Error, Result};
use crate::model::Change;

pub(super) struct Stream {
    conn: Option<Connection>,
    /// Where the next connection starts: a transaction boundary.
    resume: BinlogPos,
    /// The file being read and the end of the last event read in it.
    file: String,
    last_end: u64,
    txn: Option<OpenTxn>,
    /// table id (from TABLE_MAP) → mapping, or `None` for tables not replicated.
    maps: HashMap<u64, Option<Mapping>>,
    database: String,
    /// The last transaction handed out ended here: `Idle` comes only after a moment of quiet.
    quiet_since: Option<Instant>,
    warned_ddl: std::collections::HashSet<String>,
    /// The connection's format description arrived (checksums are known from then on).
    described: bool,
    /// Reads a changed table's definition.
    shapes: ShapeFollower,
}

impl Stream {
    pub fn new(resume: BinlogPos, database: String, zero_dates: crate::config::ZeroDates) -> Self {
        Stream {
            conn: None,
            file: resume.file.clone(),
            last_end: resume.pos,
            resume,
            txn: None,
            maps: HashMap::new(),
            database,
            quiet_since: None,
            warned_ddl: Default::default(),
            described: false,
            shapes: ShapeFollower::new(zero_dates),
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
        self.conn = None;
        if let Some(t) = self.txn.take() {
            self.resume = t.start;
        }
        self.file = self.resume.file.clone();
        self.last_end = self.resume.pos;
        self.maps.clear();
        self.shapes.reset();
    }

    async fn connect(&mut self, url: &str, server_id: u32) -> Result<()> {
        self.conn = Some(Connection::open(url, server_id, &self.resume).await?);
        self.described = false;
        self.file = self.resume.file.clone();
        self.last_end = self.resume.pos;
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
        if self.conn.is_none() {
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
            let conn = self.conn.as_mut().expect("connected above");
            let Some(ev) = conn.next_event(wait, self.txn.is_some()).await? else {
                self.quiet_since = None;
                return Ok(Out::Idle);
            };
            let header = ev.header();
            let end = u64::from(header.log_pos());
            let ts = header.timestamp();
            let data = match ev.read_data() {
                Ok(data) => data,
                Err(e) => {
                    if let Some(failed) = self.unreadable(&ev, &e, tables)? {
                        return Ok(failed);
                    }
                    None
                }
            };
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
                        self.txn = Some(OpenTxn::new(BinlogPos {
                            file: self.file.clone(),
                            pos: self.last_end,
                        }));
                    } else if sql.eq_ignore_ascii_case("COMMIT") {
                        out = self.end_txn(end, ts);
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
                    if let Some(t) = &mut self.txn {
                        if t.bytes >= chunk_bytes {
                            out = Some(Out::Txn(t.chunk()));
                        }
                    }
                }
                Some(EventData::XidEvent(_)) => {
                    out = self.end_txn(end, ts);
                }
                // Nothing to apply: transaction ids, a statement's context (its rows events
                // carry what it did), the server's housekeeping; a transaction payload's events
                // follow it.
                Some(
                    EventData::GtidEvent(_)
                    | EventData::AnonymousGtidEvent(_)
                    | EventData::PreviousGtidsEvent(_)
                    | EventData::IntvarEvent(_)
                    | EventData::RandEvent(_)
                    | EventData::UserVarEvent(_)
                    | EventData::RowsQueryEvent(_)
                    | EventData::IgnorableEvent(_)
                    | EventData::StopEvent
                    | EventData::TransactionPayloadEvent(_),
                ) => {}
                // An event of a type sluice does not know or does not apply, or one it could not
                // read of no table it replicates (see `unreadable`): skipped, but counted.
                _ => events::skipped(header.event_type_raw(), &self.at()),
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

    /// The table's shape, followed at the first rows event after its table map (see
    /// `ShapeFollower::follow`). Returns a table failure.
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
        let t = &mut tables[mapping.table];
        if t.done || t.handle.stopped() {
            return Ok(None);
        }
        let Some(tme) = self.conn.as_ref().and_then(|c| c.table_map(id)) else {
            return Ok(None);
        };
        let failed = self
            .shapes
            .follow(url, t, tme, ev, (&self.file, self.last_end))
            .await?;
        Ok(failed.map(|error| Out::Failed { table: t.id, error }))
    }

    /// The table (index into `tables`) whose changes a rows event of table id `id` are, if
    /// the stream applies them: a table replicated from here, not stopped, in a transaction
    /// after its position.
    fn applies(&self, id: u64, tables: &[BTable]) -> Option<usize> {
        let Some(Some(mapping)) = self.maps.get(&id) else {
            return None;
        };
        let t = &tables[mapping.table];
        if t.done || t.handle.stopped() {
            return None;
        }
        // Transactions that end at or before the table's position are already applied; a
        // position is a boundary, so that is every transaction starting before it.
        let txn = self.txn.as_ref()?;
        if t.from.as_ref().is_some_and(|from| txn.start < *from) {
            return None;
        }
        Some(mapping.table)
    }

    /// Where the event being read starts.
    fn at(&self) -> BinlogPos {
        BinlogPos {
            file: self.file.clone(),
            pos: self.last_end,
        }
    }

    /// An event that could not be read (`e`). A rows event of a table the stream applies
    /// stops that table, naming the event; a rows event of any other table is skipped (the
    /// caller counts it); any other event stops the stream (it may concern every table).
    fn unreadable(&self, ev: &Event, e: &std::io::Error, tables: &[BTable]) -> Result<Option<Out>> {
        let raw = ev.header().event_type_raw();
        let name = events::type_name(raw);
        let at = self.at();
        let Some(id) = events::rows_table_id(raw, ev.data(), ev.fde()) else {
            return Err(Error::Other(format!(
                "a binlog {name} event at {at} could not be read: {e}"
            )));
        };
        let Some(ti) = self.applies(id, tables) else {
            tracing::debug!(event = %name, at = %at, error = %e, "an unreadable binlog rows event of a table not replicated from here");
            return Ok(None);
        };
        let t = &tables[ti];
        Ok(Some(Out::Failed {
            table: t.id,
            error: Error::Schema(format!(
                "table {:?}: its binlog {name} event at {at} cannot be read ({e}); the table stops, the others go on. Its position stays before that event's transaction, so a sluice that reads it resumes there; otherwise snapshot the table again (delete its row from sluice.replication_state and empty its target table)",
                t.spec.model.name
            )),
        }))
    }

    /// Decodes a rows event of a replicated table into the open transaction. Returns a table
    /// failure when a row cannot be read.
    fn rows(&mut self, ev: &RowsEventData<'_>, tables: &mut [BTable]) -> Result<Option<Out>> {
        let id = ev.table_id();
        let Some(ti) = self.applies(id, tables) else {
            return Ok(None);
        };
        let (Some(Some(mapping)), Some(txn)) = (self.maps.get_mut(&id), self.txn.as_mut()) else {
            return Ok(None);
        };
        let t = &mut tables[ti];
        let tme = self
            .conn
            .as_ref()
            .and_then(|c| c.table_map(id))
            .ok_or_else(|| {
                Error::Other(format!(
                    "a rows event of table #{id} came without its table map"
                ))
            })?;
        let (changes, bytes) = match super::rows::changes(t, mapping, ev, tme) {
            Ok(x) => x,
            Err(error) => return Ok(Some(Out::Failed { table: t.id, error })),
        };
        txn.add(ti, t.id, &mut t.pending_shape, changes, bytes);
        Ok(None)
    }

    /// The open transaction ended at `end`: hands it out with its position.
    fn end_txn(&mut self, end: u64, ts: u32) -> Option<Out> {
        let txn = self.txn.take()?;
        let pos = BinlogPos {
            file: self.file.clone(),
            pos: end,
        };
        self.resume = pos.clone();
        self.quiet_since = Some(Instant::now());
        txn.end(&pos, ts).map(Out::Txn)
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
                    let part = part(t.id, vec![Change::truncate()], None);
                    return Some(Out::Txn(finish(vec![part], &pos, ts)));
                }
            }
            return None;
        }
        // A replicated table dropped or renamed away (not swapped for another of the same
        // name, as online schema change tools do): it stops, saying so.
        for (db, name) in tables_gone(sql, schema) {
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
