//! Binlog events into source transactions of changes.
//!
//! An event group starts with MariaDB's GTID event (MySQL's, and older replicas', with a
//! `BEGIN` query): a transaction runs to its `XID` (or `COMMIT`); a standalone group (DDL) is
//! its one statement; an XA transaction's group runs to its `XA PREPARE`, and its changes
//! are held until its `XA COMMIT` applies them or its `XA ROLLBACK` discards them (`xa.rs`,
//! which also says how far positions move meanwhile). Positions are only ever at group
//! boundaries. Row events of the configured tables become changes: a write an insert, an
//! update an update (carrying the old primary key when it changed), a delete a delete; a
//! `TRUNCATE` of a configured table a truncate. A transaction is handed out whole when it
//! ends, with the position after it; one that grows past the chunk size is handed out in
//! chunks, the last one complete. Columns are matched by name (`binlog_row_metadata = FULL`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mysql_async::binlog::events::{Event, EventData, RowsEventData};

use super::connection::{Connection, SILENCE};
use super::ddl::{
    column_renames, index_statement, savepoint_statement, schema_tool_copy, tables_gone,
    tables_replaced, truncated_table, written_tables, QualifiedName, Savepoint,
};
use super::events;
use super::gtid::{self, Gtid, XaStatement};
use super::rows::Mapping;
use super::shape::ShapeFollower;
use super::table::BTable;
use super::txn::{finish, part, OpenTxn, Out, Undo};
use super::xa::Prepared;
use super::{BinlogPos, GroupGtid, GtidState};
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
    /// A standalone group (a GTID event with `FL_STANDALONE`) is open: where it started.
    standalone: Option<BinlogPos>,
    /// XA transactions prepared, not yet committed or rolled back.
    prepared: Prepared,
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
    /// The GTID state after the last group read (`None` while unknown: a MySQL position
    /// without one).
    state: Option<GtidState>,
    /// The GTID of the group being read.
    group: Option<GroupGtid>,
    /// The server read: its `server_id` and MySQL's `server_uuid`.
    server_id: Option<u32>,
    server_uuid: Option<String>,
    /// The next connection asks for the binlog by GTID: the tables' positions are in more
    /// than one server's binlog.
    by_gtid: bool,
    /// The first connection's position was read from that server by this process (see
    /// `Connection::open`).
    trusted: bool,
    /// The stream was asked for by GTID and its first rotate (the file it reads) has not come.
    file_unknown: bool,
    /// The server's binlog files, for that first rotate.
    files: Vec<String>,
    /// Asked for by GTID, the server is still skipping to the place asked for: no offset read
    /// so far is a boundary that GTID state describes, until the first group starts (or a
    /// heartbeat says the server waits at the end of its binlog).
    seeking: bool,
    /// A connection was opened (the server checked the position) at least once.
    opened: bool,
    /// The boundary the group being read (or the one handed out last) started at.
    group_from: BinlogPos,
    /// A quiet stream says so after milliseconds rather than a quarter of a second (the
    /// source has a copy's chunk to read as soon as the target has taken the last).
    pub quick_idle: bool,
    /// What was handed out last came from a statement on its own (DDL: a `TRUNCATE`, a table
    /// replaced), which the server logs once it is done: a snapshot taken after it sees it.
    ddl_out: bool,
    /// Table failures found together (one statement writing several tables), handed out one
    /// at a time.
    failures: Vec<Out>,
}

impl Stream {
    /// A stream from `resume`; `by_gtid`: ask for it by its GTID state, on any server.
    pub fn new(
        resume: BinlogPos,
        by_gtid: bool,
        trusted: bool,
        database: String,
        zero_dates: crate::config::ZeroDates,
    ) -> Self {
        Stream {
            trusted,
            state: resume.gtid.clone(),
            group: None,
            server_id: resume.server_id,
            server_uuid: resume.server_uuid.clone(),
            by_gtid,
            file_unknown: false,
            files: Vec::new(),
            seeking: false,
            opened: false,
            failures: Vec::new(),
            conn: None,
            file: resume.file.clone(),
            last_end: resume.pos,
            group_from: resume.clone(),
            quick_idle: false,
            ddl_out: false,
            resume,
            txn: None,
            standalone: None,
            prepared: Prepared::default(),
            maps: HashMap::new(),
            database,
            quiet_since: None,
            warned_ddl: Default::default(),
            described: false,
            shapes: ShapeFollower::new(zero_dates),
        }
    }

    /// The last group boundary read, as far as a position may be stored (see `xa.rs`).
    pub fn boundary(&self) -> BinlogPos {
        self.prepared.clamp(self.resume.clone())
    }

    /// The last group boundary read.
    pub fn read_to(&self) -> BinlogPos {
        self.resume.clone()
    }

    /// The stream stands at a group boundary at or past `pos` (a position of the same
    /// server's binlog), with nothing of a later group read.
    pub fn reached(&self, pos: &BinlogPos) -> bool {
        self.opened
            && !self.in_transaction()
            && self.group.is_none()
            && !self.seeking
            && !self.file_unknown
            && self.resume.same_server(pos)
            && self.resume >= *pos
    }

    /// What was handed out last came from a statement on its own (see `ddl_out`).
    pub fn ddl_out(&self) -> bool {
        self.ddl_out
    }

    /// Where the group whose changes were handed out last started: the boundary before it.
    pub fn group_from(&self) -> &BinlogPos {
        &self.group_from
    }

    /// A connection was opened at least once: the server accepted the position.
    pub fn opened(&self) -> bool {
        self.opened
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || self.standalone.is_some()
    }

    /// Drops the connection: the next read reconnects at the last boundary (a transaction
    /// cut short is read again from its start).
    pub fn reset(&mut self) {
        self.conn = None;
        if let Some(t) = self.txn.take() {
            self.resume = t.start;
        }
        self.standalone = None;
        self.group = None;
        self.state = self.resume.gtid.clone();
        self.file = self.resume.file.clone();
        self.last_end = self.resume.pos;
        self.maps.clear();
        self.shapes.reset();
    }

    /// Connects, unless connected: the server checks the position (see `Connection::open`).
    pub async fn connect_if_needed(&mut self, url: &str, replica_id: u32) -> Result<()> {
        if self.conn.is_none() {
            self.connect(url, replica_id).await?;
        }
        Ok(())
    }

    async fn connect(&mut self, url: &str, replica_id: u32) -> Result<()> {
        let conn =
            Connection::open(url, replica_id, &self.resume, self.by_gtid, self.trusted).await?;
        self.by_gtid = false;
        self.trusted = false;
        self.described = false;
        self.group = None;
        self.state = conn.start_gtid.clone();
        self.server_id = Some(conn.server_id);
        self.server_uuid = conn.server_uuid.clone();
        self.file_unknown = conn.by_gtid;
        self.seeking = conn.by_gtid;
        if !conn.by_gtid {
            // Read where it starts: the place is this server's, with the state there.
            self.resume.gtid = self.state.clone();
            self.resume.server_id = self.server_id;
            self.resume.server_uuid = self.server_uuid.clone();
        }
        self.files = conn.files.clone();
        self.file = self.resume.file.clone();
        self.last_end = self.resume.pos;
        self.conn = Some(conn);
        self.opened = true;
        Ok(())
    }

    /// Reads events until there is something to hand out. `chunk_bytes`: a transaction
    /// holding this much is handed out in chunks.
    /// `stop_at`: a group boundary of this server's binlog (a chunk's snapshot position):
    /// `Out::Reached` as soon as the stream stands there, before reading any group after it.
    pub async fn next(
        &mut self,
        url: &str,
        server_id: u32,
        tables: &mut [BTable],
        chunk_bytes: usize,
        stop_at: Option<&BinlogPos>,
    ) -> Result<Out> {
        if self.conn.is_none() {
            self.connect(url, server_id).await?;
        }
        loop {
            if let Some(failed) = self.failures.pop() {
                return Ok(failed);
            }
            if !self.in_transaction() && self.group.is_none() {
                self.group_from = self.resume.clone();
            }
            self.ddl_out = false;
            if stop_at.is_some_and(|s| self.reached(s)) {
                return Ok(Out::Reached);
            }
            // Right after a transaction, a short wait tells a burst from a quiet source.
            let wait = match (&self.txn, self.quiet_since) {
                (Some(_), _) => SILENCE,
                (None, Some(since)) if since.elapsed() < Duration::from_millis(2) => {
                    Duration::from_millis(2)
                }
                (None, _) if self.quick_idle => Duration::from_millis(5),
                (None, _) => Duration::from_millis(250),
            };
            let in_group = self.in_transaction();
            let conn = self.conn.as_mut().expect("connected above");
            let Some(ev) = conn.next_event(wait, in_group).await? else {
                self.quiet_since = None;
                return Ok(Out::Idle);
            };
            let header = ev.header();
            let end = u64::from(header.log_pos());
            let ts = header.timestamp();
            // Where the event starts: the end of the one before, unless the server skipped
            // some (a stream asked for by GTID starts at its file's beginning and skips to it).
            let size = u64::from(header.event_size());
            let artificial = header
                .flags()
                .contains(mysql_async::binlog::EventFlags::LOG_EVENT_ARTIFICIAL_F);
            if end >= size && size > 0 && !artificial && self.described {
                self.last_end = end - size;
            }
            let mut starts_group = false;
            if raw_type_starts_group(header.event_type_raw()) {
                self.seeking = false;
            }
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
            let raw = header.event_type_raw();
            match data {
                // MariaDB's events, which mysql_common does not read: a GTID starts a group;
                // annotate rows (a statement's text), binlog checkpoint and GTID list (the
                // server's housekeeping) carry nothing to apply.
                None if raw == gtid::MARIADB_GTID_EVENT => {
                    starts_group = true;
                    self.gtid(ev.data(), header.server_id())?
                }
                None if matches!(raw, 160 | 161 | 163) => {}
                // The first rotate of a connection comes before the format description, so its
                // name still carries the event's checksum bytes: the file is the one asked
                // for. Every later rotate (the server moving on to the next file, real or
                // artificial after a restart's STOP) names the next file.
                // Asked for by GTID, that file is the server's to say: the name is the longest
                // of its files the bytes start with.
                Some(EventData::RotateEvent(r)) if !self.described => {
                    if self.file_unknown {
                        let raw = r.name_raw();
                        if let Some(f) = self
                            .files
                            .iter()
                            .filter(|f| raw.starts_with(f.as_bytes()))
                            .max_by_key(|f| f.len())
                        {
                            self.file = f.clone();
                            self.last_end = r.position();
                            self.file_unknown = false;
                        } else {
                            // Positions would carry the old server's file name: never.
                            return Err(Error::Other(format!(
                                "the binlog stream asked for by GTID starts in a file the server does not list ({:?}; SHOW BINARY LOGS: {}); sluice cannot tell where it reads, so it stops here",
                                String::from_utf8_lossy(raw),
                                self.files.join(", ")
                            )));
                        }
                    }
                    continue;
                }
                Some(EventData::RotateEvent(r)) => {
                    self.file = r.name().into_owned();
                    self.last_end = r.position();
                    if !self.in_transaction() && self.group.is_none() && !self.seeking {
                        self.resume = self.point(self.last_end, false);
                    }
                    continue;
                }
                Some(EventData::FormatDescriptionEvent(_)) => {
                    self.described = true;
                    continue;
                }
                // The server waits at the end of its binlog: one asked for by GTID has skipped
                // all it had to, and that end is where the stream stands.
                Some(EventData::HeartbeatEvent) => {
                    if self.seeking && !self.file_unknown && !self.in_transaction() && end > 0 {
                        self.seeking = false;
                        self.last_end = end;
                        self.resume = self.point(end, false);
                    }
                    continue;
                }
                Some(EventData::QueryEvent(q)) => {
                    let sql = q.query();
                    let sql = sql.trim();
                    let xa = gtid::xa_statement(sql);
                    if sql.eq_ignore_ascii_case("BEGIN") {
                        self.open(false);
                    } else if sql.eq_ignore_ascii_case("COMMIT") {
                        out = self.end_txn(end, ts);
                    } else if self.txn.is_some() {
                        // Inside a transaction: its rows events say what it did (`XA END`
                        // among the rest), but savepoints and a rollback take some back.
                        if let Some(sp) = savepoint_statement(sql) {
                            self.savepoint(sp, end, tables)?;
                        } else if let Some(names) = written_tables(sql) {
                            // A write in statement format: no row images to apply.
                            self.statement_write(sql, &q.schema(), &names, tables);
                        } else {
                            // `CREATE OR REPLACE TABLE … SELECT`: emptied, then its rows.
                            self.replaced_in_txn(sql, &q.schema(), tables);
                        }
                    } else if xa == Some(XaStatement::Start) {
                        // MySQL's XA transaction: its group starts with the statement.
                        self.open(true);
                    } else if let Some(XaStatement::Commit(xid) | XaStatement::Rollback(xid)) = &xa
                    {
                        let commit = matches!(xa, Some(XaStatement::Commit(_)));
                        out = self.xa_end(xid, commit, end, ts, tables);
                    } else if !sql.starts_with('#') {
                        // A statement on its own (DDL): a transaction of its own.
                        let schema = q.schema().into_owned();
                        out = self.statement(sql, &schema, end, ts, tables);
                        self.ddl_out = out.is_some();
                    }
                    // A standalone group is its one statement.
                    if self.txn.is_none() {
                        self.standalone = None;
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
                                    image: Vec::new(),
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
                        if t.bytes >= chunk_bytes && !t.xa {
                            out = Some(Out::Txn(t.chunk()));
                        }
                    }
                }
                Some(EventData::XidEvent(_)) => {
                    out = self.end_txn(end, ts);
                }
                Some(EventData::XaPrepareLogEvent(body)) => {
                    out = self.xa_prepare(&body, end, ts)?;
                }
                // Nothing to apply: transaction ids, a statement's context (its rows events
                // carry what it did), the server's housekeeping; a transaction payload's events
                // follow it.
                // A statement-based `LOAD DATA`: its rows are in no row event.
                Some(EventData::ExecuteLoadQueryEvent(q)) => {
                    let sql = q.query();
                    if let Some(names) = written_tables(&sql) {
                        self.statement_write(&sql, &q.schema(), &names, tables);
                    }
                }
                // The server could not write some changes to its binlog (they are missing
                // from it): which tables they touched is not said, so the run stops.
                Some(EventData::IncidentEvent(i)) => {
                    return Err(Error::Other(format!(
                        "the source's binlog holds an INCIDENT at {} ({}): the server failed to write some changes to its binary log, so they are missing from it, and any replicated table may lack them. sluice stops here rather than go on without them. Copy the tables again: stop sluice, delete this pipeline's rows from sluice.replication_state, empty the target tables, and start sluice",
                        self.at(),
                        i.message()
                    )));
                }
                // MySQL's GTID: the group that follows is that transaction.
                Some(EventData::GtidEvent(g)) => {
                    starts_group = true;
                    let uuid = uuid::Uuid::from_bytes(g.sid()).hyphenated().to_string();
                    self.group = Some(GroupGtid::MySql {
                        sid: match g.tag() {
                            Some(tag) => format!("{uuid}:{}", tag.as_str().to_ascii_lowercase()),
                            None => uuid,
                        },
                        gno: g.gno(),
                    });
                }
                Some(
                    EventData::AnonymousGtidEvent(_)
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
            // A group ended: the GTID state moves past it.
            if !self.in_transaction() && !starts_group {
                if let Some(g) = self.group.take() {
                    if let Some(state) = &mut self.state {
                        state.add(&g);
                    }
                }
            }
            if end > 0 {
                self.last_end = end;
                if !self.in_transaction() && self.group.is_none() && !self.seeking {
                    self.resume = self.point(end, false);
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
        if t.from
            .as_ref()
            .is_some_and(|from| covered(from, &txn.start, self.group.as_ref()))
        {
            return None;
        }
        Some(mapping.table)
    }

    /// Offset `pos` of the file being read, with the GTID state there: after the group being
    /// read when `with_group`.
    fn point(&self, pos: u64, with_group: bool) -> BinlogPos {
        let mut gtid = self.state.clone();
        if let (true, Some(state), Some(g)) = (with_group, &mut gtid, &self.group) {
            state.add(g);
        }
        BinlogPos {
            file: self.file.clone(),
            pos,
            gtid,
            server_id: self.server_id,
            server_uuid: self.server_uuid.clone(),
        }
    }

    /// Offset `end` of the file being read: the end of the group being read.
    fn here(&self, end: u64) -> BinlogPos {
        self.point(end, true)
    }

    /// Where the event being read starts (before the group being read, at its start).
    fn at(&self) -> BinlogPos {
        self.point(self.last_end, false)
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
                "table {:?}: its binlog {name} event at {at} cannot be read ({e}); the table stops, the others go on. Its position stays before that event's transaction, so a sluice that reads it resumes there; otherwise copy the table again: `sluice snapshot --table {}` (the others go on meanwhile)",
                t.spec.model.name, t.spec.model.name
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
        let conn = self.conn.as_ref().ok_or_else(|| {
            Error::Other(format!(
                "a rows event of table #{id} came without a connection"
            ))
        })?;
        let tme = conn.table_map(id).ok_or_else(|| {
            Error::Other(format!(
                "a rows event of table #{id} came without its table map"
            ))
        })?;
        let (changes, bytes) = match super::rows::changes(t, mapping, ev, tme, &conn.charsets) {
            Ok(x) => x,
            Err(error) => return Ok(Some(Out::Failed { table: t.id, error })),
        };
        txn.add(ti, t.id, t.ordered, &mut t.pending_shape, changes, bytes);
        Ok(None)
    }

    /// The open transaction ended at `end`: hands it out with its position.
    fn end_txn(&mut self, end: u64, ts: u32) -> Option<Out> {
        let txn = self.txn.take()?;
        let pos = self.here(end);
        self.resume = pos.clone();
        self.quiet_since = Some(Instant::now());
        txn.end(&self.prepared.clamp(pos), ts).map(Out::Txn)
    }

    /// A savepoint statement inside the open transaction: `SAVEPOINT` marks what it holds,
    /// `ROLLBACK TO` takes back what was read since, `ROLLBACK` drops the transaction (its
    /// group ends there). What cannot be taken back (changes handed out in a chunk, a
    /// savepoint this stream did not read) stops the run, naming the tables.
    fn savepoint(&mut self, sp: Savepoint, end: u64, tables: &[BTable]) -> Result<()> {
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        let undone = match &sp {
            Savepoint::Set(name) => {
                txn.savepoint(name);
                return Ok(());
            }
            Savepoint::RollbackTo(name) => txn.rollback_to(name),
            Savepoint::Rollback if txn.chunked() => Err(Undo::Chunked),
            Savepoint::Rollback => {
                self.txn = None;
                self.resume = self.here(end);
                return Ok(());
            }
        };
        let Err(why) = undone else { return Ok(()) };
        let names: Vec<&str> = txn
            .touched()
            .iter()
            .filter_map(|id| tables.iter().find(|t| t.id == *id))
            .map(|t| t.spec.model.name.as_str())
            .collect();
        let why = match why {
            Undo::Chunked => {
                "changes before it were already applied in chunks of this large transaction"
            }
            Undo::Unknown => {
                "its savepoint was set before the binlog position the stream started from"
            }
        };
        Err(Error::Other(format!(
            "binlog: a transaction changing {} takes changes back at {} ({sp:?}), and {why}; sluice cannot apply it exactly. Copy the tables again (`sluice snapshot --table T` for each), or run `sluice verify --repair` once replication has passed this point",
            if names.is_empty() { "replicated tables".to_string() } else { names.join(", ") },
            self.at(),
        )))
    }

    /// A data-changing statement in statement format (`names`: the tables it may change, in
    /// the session's database `schema` where it names none): it carries no row images, so
    /// each replicated table it may change stops, naming it (never a silent divergence); the
    /// same on a table not replicated passes by.
    fn statement_write(
        &mut self,
        sql: &str,
        schema: &str,
        names: &[QualifiedName],
        tables: &[BTable],
    ) {
        let start = self
            .txn
            .as_ref()
            .map_or_else(|| self.at(), |t| t.start.clone());
        let mut seen = Vec::new();
        for (db, name) in names {
            if db.as_deref().unwrap_or(schema) != self.database || seen.contains(name) {
                continue;
            }
            seen.push(name.clone());
            let Some(t) = tables.iter().find(|t| t.spec.model.name == *name) else {
                continue;
            };
            if t.done
                || t.handle.stopped()
                || t.from
                    .as_ref()
                    .is_some_and(|f| covered(f, &start, self.group.as_ref()))
            {
                continue;
            }
            self.failures.push(Out::Failed {
                table: t.id,
                error: Error::Schema(format!(
                    "table {name:?}: a statement-format write at {} (`{}`) may have changed it, and such an event carries no row images, so sluice cannot apply it; the table stops here, the others go on. The session that wrote it used binlog_format = STATEMENT or MIXED (tools such as pt-table-checksum set it per session): make every session writing replicated tables use ROW (SET GLOBAL binlog_format = 'ROW', in my.cnf too, and end sessions that set it themselves); then copy the table again: `sluice snapshot --table {name}` (while sluice runs; the others go on meanwhile)",
                    self.at(),
                    sql.chars().take(200).collect::<String>()
                )),
            });
        }
    }

    /// The replicated tables (live, after their position) a statement replaces wholesale (see
    /// `tables_replaced`), with where their new rows come from.
    fn replacements(
        &self,
        sql: &str,
        schema: &str,
        tables: &[BTable],
    ) -> Vec<(usize, Option<(String, String)>)> {
        let start = self
            .txn
            .as_ref()
            .map_or_else(|| self.at(), |t| t.start.clone());
        tables_replaced(sql, schema)
            .into_iter()
            .filter(|((db, _), _)| *db == self.database)
            .filter_map(|((_, name), from)| {
                let i = tables.iter().position(|t| t.spec.model.name == name)?;
                let t = &tables[i];
                let applied = t
                    .from
                    .as_ref()
                    .is_some_and(|f| covered(f, &start, self.group.as_ref()));
                (!t.done && !t.handle.stopped() && !applied).then_some((i, from))
            })
            .collect()
    }

    /// A statement outside a transaction that replaces a replicated table's rows wholesale:
    /// `CREATE OR REPLACE TABLE` empties it (a truncate; its new shape is followed at its next
    /// change); a table renamed onto its name by an online schema change tool (its copy, filled
    /// from it) keeps its rows and goes on; any other table renamed onto it brings rows sluice
    /// never read: on MariaDB the target is emptied there and the table copied again beside
    /// the stream, elsewhere (no exact snapshot position) the table stops, naming the
    /// statement and how to copy it again.
    fn replaced(
        &mut self,
        sql: &str,
        schema: &str,
        pos: &BinlogPos,
        ts: u32,
        tables: &mut [BTable],
    ) -> Option<Out> {
        let mut parts = Vec::new();
        for (i, from) in self.replacements(sql, schema, tables) {
            let t = &mut tables[i];
            let name = t.spec.model.name.clone();
            match from {
                None => {
                    t.indexes_stale = true;
                    parts.push(part(t.id, vec![Change::truncate()], None));
                }
                Some((db, copy)) if db == self.database && schema_tool_copy(&name, &copy) => {
                    tracing::info!(table = %name, copy = %copy, "an online schema change tool swapped its copy of the table in: the same rows, followed without a copy");
                }
                // MariaDB: the target is emptied here, in the stream's order, and the table
                // copied again beside the stream from the next chunk on (its changes after
                // this point apply as they come, as for a new table; see `source.rs`).
                Some((db, other)) if self.server_uuid.is_none() => {
                    tracing::warn!(table = %name, statement = %sql.chars().take(200).collect::<String>(), at = %self.at(), replaced_by = %format!("{db}.{other}"), "another table was put in the table's place, so its rows are ones sluice never read: its target is emptied here and it is copied again beside the stream");
                    t.indexes_stale = true;
                    t.snapshot = Some(Default::default());
                    t.from = None;
                    parts.push(part(t.id, vec![Change::truncate()], None));
                }
                Some((db, other)) => self.failures.push(Out::Failed {
                    table: t.id,
                    error: Error::Schema(format!(
                        "table {name:?}: `{}` at {} put table {db}.{other} in its place, so its rows are now ones sluice never read; the table stops here, the others go on. To go on with the new rows, copy the table again: `sluice snapshot --table {name}` (while sluice runs; the others go on meanwhile). (An online schema change tool's swap of its copy, gh-ost's _{name}_gho or pt-online-schema-change's _{name}_new, keeps the same rows and is followed without a copy.)",
                        sql.chars().take(200).collect::<String>(),
                        self.at()
                    )),
                }),
            }
        }
        if let Some(failed) = self.failures.pop() {
            return Some(failed);
        }
        if parts.is_empty() {
            return None;
        }
        self.quiet_since = Some(Instant::now());
        Some(Out::Txn(finish(
            parts,
            &self.prepared.clamp(pos.clone()),
            ts,
        )))
    }

    /// `CREATE OR REPLACE TABLE … SELECT` inside a transaction's group: the table is emptied
    /// there, and the row events that follow fill it.
    fn replaced_in_txn(&mut self, sql: &str, schema: &str, tables: &mut [BTable]) {
        for (i, from) in self.replacements(sql, schema, tables) {
            if from.is_some() {
                continue;
            }
            let t = &mut tables[i];
            t.indexes_stale = true;
            if let Some(txn) = self.txn.as_mut() {
                txn.add(
                    i,
                    t.id,
                    t.ordered,
                    &mut t.pending_shape,
                    vec![Change::truncate()],
                    0,
                );
            }
        }
    }

    /// A group starts here (the event being read): a transaction (`xa`: an XA transaction's,
    /// up to its prepare). One still open (a group cut short, which the server does not
    /// write) is dropped, as a `BEGIN` always did.
    fn open(&mut self, xa: bool) {
        self.drop_open();
        self.txn = Some(OpenTxn::new(self.at(), xa));
    }

    /// A group starts here while one is open (cut short, which the server does not write):
    /// the open one is dropped, as a `BEGIN` always did, saying so.
    fn drop_open(&mut self) {
        if self.txn.is_some() || self.standalone.is_some() {
            tracing::warn!(at = %self.at(), "a binlog event group started before the last one ended; its changes so far are dropped");
            if let (Some(g), Some(state)) = (self.group.take(), &mut self.state) {
                state.add(&g);
            }
        }
        self.txn = None;
        self.standalone = None;
    }

    /// MariaDB's GTID event (`data`: its body): a transaction starts, or a standalone group
    /// (one statement, no XID after it). Its commit id (group commit) means nothing here.
    fn gtid(&mut self, data: &[u8], server: u32) -> Result<()> {
        let g = Gtid::read(data).ok_or_else(|| {
            Error::Other(format!(
                "a binlog GTID event at {} could not be read ({} bytes)",
                self.at(),
                data.len()
            ))
        })?;
        tracing::trace!(
            domain = g.domain,
            seq_no = g.seq_no,
            flags = g.flags,
            "GTID"
        );
        if g.standalone() {
            self.drop_open();
            self.standalone = Some(self.at());
        } else {
            self.open(g.prepared_xa());
        }
        self.group = Some(GroupGtid::MariaDb {
            domain: g.domain,
            server,
            seq: g.seq_no,
        });
        Ok(())
    }

    /// An XA_PREPARE_LOG_EVENT (`body`) ended the open XA transaction's group: its changes
    /// are held until its commit. A one-phase commit written so (MySQL) ends it as a commit.
    fn xa_prepare(&mut self, body: &[u8], end: u64, ts: u32) -> Result<Option<Out>> {
        let (xid, one_phase) = gtid::xa_prepare(body).ok_or_else(|| {
            Error::Other(format!(
                "a binlog XA_PREPARE_LOG_EVENT at {} could not be read",
                self.at()
            ))
        })?;
        if one_phase {
            return Ok(self.end_txn(end, ts));
        }
        let Some(txn) = self.txn.take() else {
            return Err(Error::Other(format!(
                "a binlog XA PREPARE {xid} at {} came outside a transaction",
                self.at()
            )));
        };
        self.resume = self.here(end);
        tracing::debug!(xid = %xid, at = %txn.start, held = self.prepared.len() + 1, "XA transaction prepared: its changes are held until its commit");
        self.prepared.hold(xid, txn);
        Ok(None)
    }

    /// `XA COMMIT` (`commit`) or `XA ROLLBACK` of `xid`, ending at `end`: a held transaction
    /// is handed out in the commit's place, or dropped.
    fn xa_end(
        &mut self,
        xid: &gtid::Xid,
        commit: bool,
        end: u64,
        ts: u32,
        tables: &mut [BTable],
    ) -> Option<Out> {
        let pos = self.here(end);
        let Some(mut txn) = self.prepared.take(xid) else {
            if commit {
                tracing::warn!(xid = %xid, at = %self.at(), "an XA COMMIT of a transaction whose XA PREPARE this stream did not read (it lies before where the stream started): applied before a restart, nothing is missing; but if it was still prepared when a table's snapshot was taken, its changes to that table are not on the target (`sluice verify` finds them)");
            }
            return None;
        };
        if !commit {
            tracing::debug!(xid = %xid, "XA transaction rolled back: its held changes are dropped");
            return None;
        }
        self.quiet_since = Some(Instant::now());
        txn.take_shapes(|id| {
            tables
                .iter_mut()
                .find(|t| t.id == id)
                .and_then(|t| t.pending_shape.take())
        });
        txn.end(&self.prepared.clamp(pos), ts).map(Out::Txn)
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
        let pos = self.here(end);
        if let Some(names) = written_tables(sql) {
            self.statement_write(sql, schema, &names, tables);
            return self.failures.pop();
        }
        if let Some(out) = self.replaced(sql, schema, &pos, ts, tables) {
            return Some(out);
        }
        if let Some((db, name)) = truncated_table(sql) {
            let db = db.unwrap_or_else(|| schema.to_string());
            if db == self.database {
                if let Some(t) = tables.iter().find(|t| t.spec.model.name == name) {
                    if t.done
                        || t.handle.stopped()
                        || t.from
                            .as_ref()
                            .is_some_and(|f| covered(f, &self.at(), self.group.as_ref()))
                    {
                        return None;
                    }
                    self.quiet_since = Some(Instant::now());
                    let part = part(t.id, vec![Change::truncate()], None);
                    let pos = self.prepared.clamp(pos);
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
                if t.done
                    || t.handle.stopped()
                    || t.from
                        .as_ref()
                        .is_some_and(|f| covered(f, &self.at(), self.group.as_ref()))
                {
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

/// An event that starts a group: MariaDB's GTID event, MySQL's (and its anonymous one), or
/// a `BEGIN` query (older servers).
fn raw_type_starts_group(raw: u8) -> bool {
    use mysql_async::binlog::EventType as T;
    raw == gtid::MARIADB_GTID_EVENT
        || raw == T::GTID_EVENT as u8
        || raw == T::ANONYMOUS_GTID_EVENT as u8
        || raw == T::QUERY_EVENT as u8
}

/// Whether a group starting at `start` (GTID `group`) is at or before a table's position
/// `from`, so applied already. On the server whose binlog `from` is: by file and offset (a
/// position is a group boundary, so that is every group starting before it). On another
/// server (after a failover): by the GTID state `from` carries; a group without a GTID is
/// not covered.
pub(super) fn covered(from: &BinlogPos, start: &BinlogPos, group: Option<&GroupGtid>) -> bool {
    if from.same_server(start) {
        return *start < *from;
    }
    match (&from.gtid, group) {
        (Some(state), Some(g)) => state.contains(g),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_before_a_position_are_covered_on_its_server_by_offset_elsewhere_by_gtid() {
        let on = |server: u32, file: &str, pos: u64, gtid: &str| BinlogPos {
            gtid: GtidState::parse(gtid),
            server_id: Some(server),
            ..BinlogPos::at(file, pos)
        };
        let from = on(1, "mysql-bin.000003", 500, "0-1-40");
        let g = |seq| GroupGtid::MariaDb {
            domain: 0,
            server: 1,
            seq,
        };
        // Same server: the offset decides (the GTID is not looked at).
        assert!(covered(
            &from,
            &on(1, "mysql-bin.000003", 400, ""),
            Some(&g(99))
        ));
        assert!(!covered(
            &from,
            &on(1, "mysql-bin.000003", 500, ""),
            Some(&g(1))
        ));
        // A position an older sluice wrote (no server): the same server.
        assert!(covered(
            &BinlogPos::at("mysql-bin.000003", 500),
            &on(2, "mysql-bin.000003", 400, ""),
            None
        ));
        // The promoted replica: its files say nothing of ours, the GTID does.
        let there = on(2, "rbin.000001", 9000, "");
        assert!(covered(&from, &there, Some(&g(40))));
        assert!(!covered(&from, &there, Some(&g(41))));
        assert!(!covered(&from, &there, None));
        let other_domain = GroupGtid::MariaDb {
            domain: 1,
            server: 2,
            seq: 1,
        };
        assert!(!covered(&from, &there, Some(&other_domain)));
    }
}
