//! Reading one table in keyset pages past its position.
//!
//! Each page is a locking read that gives up at once on a locked row (`… LOCK IN SHARE MODE
//! NOWAIT` on MariaDB, `… FOR SHARE NOWAIT` on MySQL 8) in READ COMMITTED: when it succeeds,
//! no row of an open transaction lies between the position and the page's last row, so no
//! row can commit behind the new position later (a late commit). When it meets one, the
//! page is read again after the poll interval.
//!
//! Below the read horizon, on a time cursor, reads take no locks: rows whose cursor is older
//! than the oldest open InnoDB transaction (less a second, for `trx_started`'s whole
//! seconds, and the safety lag) cannot belong to a transaction that may still commit. That
//! makes a backlog a covering-index scan instead of a row lock (and a clustered-index visit)
//! per row. Reading `information_schema.INNODB_TRX` needs the PROCESS privilege; without it
//! every read locks.
//!
//! Pages are bounded in bytes as well as rows: the row limit follows the widest row of the
//! last page, and a page stops taking rows once it holds `page_bytes` (the rest of the
//! result is read past and dropped), so memory stays flat whatever the row width.

use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, AssertSqlSafe, MySqlConnection};
use tracing::debug;

use super::keyset::{self, Keyset};
use crate::error::{Error, Result, Side};
use crate::model::{Kind, TableId, TableModel};
use crate::source::mysql::read::{bind_value, read_page};
use crate::source::mysql::{quote, Flavor, ReadSpec, Zone};
use crate::telemetry::TableHandle;
use crate::value::{Row, Value};

/// How one read ended.
pub(super) enum Outcome {
    /// Rows (possibly none); `full`: the page was full (rows may follow at once).
    Rows { rows: Vec<Row>, full: bool },
    /// A row of an open transaction lies ahead: nothing was returned.
    Held,
    /// `--once`: the table was already read up to its end as of start.
    Exhausted,
}

/// The SQL of one table, for one server flavour.
struct Sql {
    first: String,
    after: String,
    /// Non-locking forms of the reads, bounded by the read horizon (time cursors only).
    free: Option<(String, String)>,
    binds_after: Vec<usize>,
    binds_upper: Vec<usize>,
    /// `--once`: the last keyset as of start.
    last_row: String,
    /// `--once`: whether a row up to the end as of start, and behind the source's clock, is
    /// left after the position (from the start, and after a position), whatever the read
    /// horizon holds back.
    left: (String, String),
}

/// One polled table's reading state.
pub(super) struct TableReader {
    pub id: TableId,
    pub spec: ReadSpec,
    pub keyset: Keyset,
    pub handle: std::sync::Arc<TableHandle>,
    /// Keyset of the last row handed out; `None` before the first.
    pub position: Option<Vec<Value>>,
    /// `--once`: the end of the table as of start (`Some(None)`: it was empty).
    upper: Option<Option<Vec<Value>>>,
    sql: Option<Sql>,
    /// The last page was full: a backlog, where reads below the horizon pay off.
    last_full: bool,
    /// The last read met a row of an open transaction.
    held: bool,
    /// `--once` said it waits for rows the read horizon holds back.
    said_waiting: bool,
    /// Rows asked for per page, adapted to the row width.
    pub limit: usize,
    /// When this table may be read next.
    pub due: Instant,
    /// `--once`: caught up with the end as of start; or stopped.
    pub done: bool,
    /// When the newest cursor value was last compared with the clock, and whether it was
    /// reported ahead.
    pub ahead_checked: Option<Instant>,
    pub ahead_warned: bool,
    /// An initial load read in primary-key order, while it runs.
    load: Option<KeyLoad>,
    /// Whether a load in key order was considered (it is, once, before the first read).
    load_decided: bool,
    /// The table's definition as last seen ([`crate::source::mysql::shape_fingerprint`]).
    fingerprint: Option<String>,
    /// A new shape the next rows handed out carry, for the target to follow first.
    pub pending_shape: Option<std::sync::Arc<crate::model::TableModel>>,
}

/// Where reading was (see [`TableReader::mark`]).
#[derive(Clone)]
pub(super) struct Mark(Option<Vec<Value>>, Option<KeyLoad>);

impl Mark {
    /// Reading was in an initial load in primary-key order: the next page's rows are read
    /// for the first time (the load reads each key once).
    pub(super) fn in_key_order_load(&self) -> bool {
        self.1.is_some()
    }
}

/// An initial load read in primary-key order. Every row whose cursor is below `until` (the
/// read horizon when the load started: below the oldest open transaction, less a second
/// and the safety lag) was committed when it started, so one scan in key order sees them
/// all; rows inserted or updated since carry a cursor value at or past `until`, and the
/// cursor reads them from there once the scan ends. Rows of that tail the scan also saw are
/// applied twice, harmlessly (by key).
#[derive(Debug, Clone)]
struct KeyLoad {
    /// Primary-key values of the last row read; `None` before the first.
    after: Option<Vec<Value>>,
    until: Value,
}

impl TableReader {
    pub fn new(
        id: TableId,
        spec: ReadSpec,
        keyset: Keyset,
        handle: std::sync::Arc<TableHandle>,
        start: Option<Vec<Value>>,
        first_limit: usize,
    ) -> Self {
        TableReader {
            id,
            spec,
            keyset,
            handle,
            position: start,
            upper: None,
            sql: None,
            last_full: true,
            held: false,
            said_waiting: false,
            limit: first_limit.max(1),
            due: Instant::now(),
            done: false,
            ahead_checked: None,
            ahead_warned: false,
            load: None,
            load_decided: false,
            fingerprint: None,
            pending_shape: None,
        }
    }

    /// Where reading is, to go back to.
    pub fn mark(&self) -> Mark {
        Mark(self.position.clone(), self.load.clone())
    }

    /// Goes back to `mark`: rows read since are read again (they were not handed out).
    pub fn restore(&mut self, mark: Mark) {
        let Mark(position, load) = mark;
        self.position = position;
        self.load = load;
        self.last_full = true;
        self.due = Instant::now();
    }

    /// Looks at the table's definition after rows were read from `before` (or after a read
    /// failed on a column), and follows a change: the rows just read may be in either shape,
    /// so they are dropped and read again, in the new shape, from `before`; the next rows
    /// handed out carry the new model. Returns whether it changed. A definition unchanged
    /// after the read was the one the read saw: its rows are in the shape they were read in.
    /// A table that is gone, or whose cursor or key went, fails.
    pub async fn follow_shape(
        &mut self,
        conn: &mut MySqlConnection,
        config: &crate::config::TableSettings,
        zero_dates: crate::config::ZeroDates,
        before: Mark,
    ) -> Result<bool> {
        let name = self.spec.model.name.clone();
        let fp = crate::source::mysql::shape_fingerprint(conn, &name)
            .await?
            .ok_or_else(|| crate::source::mysql::table_gone(&name))?;
        if self.fingerprint.as_deref() == Some(fp.as_str()) {
            return Ok(false);
        }
        let (source, key) = crate::source::mysql::introspect_keyed(conn, config, false).await?;
        let old = self.spec.model.clone();
        let cursor: Vec<String> = self
            .keyset
            .cursor
            .iter()
            .map(|&i| old.columns[i].name.clone())
            .collect();
        let keyset = Keyset::resolve(&source, &cursor, &key)?;
        let mut spec = ReadSpec::new(&source, key, zero_dates, &keyset.columns);
        self.fingerprint = Some(fp);
        if spec.model.same_shape(&old) {
            if spec.model.indexes != old.indexes {
                // Rows are unchanged: only the target's indexes follow.
                std::sync::Arc::make_mut(&mut spec.model).version = old.version + 1;
                tracing::info!(table = %name, "the source table's indexes changed; the target's follow");
                self.pending_shape = Some(spec.model.clone());
                self.spec = spec;
            }
            return Ok(false);
        }
        let model = std::sync::Arc::make_mut(&mut spec.model);
        model.version = old.version + 1;
        model.infer_renames(&old);
        if let Some(error) = crate::source::mysql::excluded_renamed(
            &self.spec.excluded,
            &spec.excluded,
            &old,
            model,
            &[],
        ) {
            return Err(error);
        }
        let Mark(position, load) = before;
        self.position = position;
        self.load = load;
        tracing::info!(
            table = %name,
            version = model.version,
            columns = %model.columns.iter().map(|c| format!("{} {}", c.name, c.source_type)).collect::<Vec<_>>().join(", "),
            "the source table changed shape; reading it in the new shape"
        );
        self.pending_shape = Some(spec.model.clone());
        self.spec = spec;
        self.keyset = keyset;
        self.sql = None;
        self.last_full = true;
        self.due = Instant::now();
        Ok(true)
    }

    pub fn name(&self) -> &str {
        &self.spec.model.name
    }

    /// Builds the table's SQL for the server's flavour.
    fn build(&self, flavor: Flavor, once: bool, safety_lag: Duration, zone: &Zone) -> Sql {
        let t = &self.spec.model;
        let cols: Vec<String> = self
            .keyset
            .columns
            .iter()
            .map(|&i| quote(&t.columns[i].name))
            .collect();
        let select = self.spec.select_list();
        let from = quote(&t.name);
        let order = cols.join(", ");
        let desc = cols
            .iter()
            .map(|c| format!("{c} DESC"))
            .collect::<Vec<_>>()
            .join(", ");
        let phs = placeholders(t, &self.keyset.columns);
        let (upper_cond, binds_upper) = keyset::condition(&cols, &phs, false, false);
        let (after_cond, binds_after) = keyset::condition(&cols, &phs, true, true);
        let mut common = Vec::new();
        if once {
            common.push(upper_cond.clone());
        }
        let time_cursor = self.keyset.time_cursor(t);
        let first_cursor = quote(&t.columns[self.keyset.cursor[0]].name);
        let lag_us = safety_lag.as_micros() as u64;
        // The clock in the cursor's zone: a DATETIME holds local time in the zone it is
        // written in (`zone`); a TIMESTAMP is read in UTC (the session's zone).
        let local = self.local_time_cursor();
        if time_cursor {
            // Server-set times are taken as a statement starts, before its row is in the
            // index (where a locking read would meet it): reads stay below the oldest
            // statement still running that may write, and the safety lag covers the moment
            // before a statement shows in the process list (and client clocks, if raised).
            common.push(format!(
                "{first_cursor} < {} - INTERVAL {lag_us} MICROSECOND",
                zone.statements_sql(local, flavor.mariadb)
            ));
        }
        let where_of = |mut conds: Vec<String>| {
            conds.extend(common.iter().cloned());
            if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            }
        };
        let lock = flavor.share_nowait();
        let free = time_cursor.then(|| {
            let horizon = format!(
                "{first_cursor} < {}",
                zone.horizon_sql(local, flavor.mariadb, lag_us)
            );
            (
                format!(
                    "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ?",
                    where_of(vec![horizon.clone()])
                ),
                format!(
                    "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ?",
                    where_of(vec![after_cond.clone(), horizon])
                ),
            )
        });
        Sql {
            first: format!(
                "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ? {lock}",
                where_of(vec![])
            ),
            after: format!(
                "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ? {lock}",
                where_of(vec![after_cond.clone()])
            ),
            free,
            binds_after,
            binds_upper,
            last_row: format!("SELECT {select} FROM {from} ORDER BY {desc} LIMIT 1"),
            left: {
                // Rows ahead of the source's clock (written in another zone) wait for the
                // clock, which may be hours: `--once` ends without them, saying so.
                let passed = if time_cursor {
                    format!(" AND {first_cursor} < {}", zone.clock_sql(local).0)
                } else {
                    String::new()
                };
                (
                    format!("SELECT 1 FROM {from} WHERE {upper_cond}{passed} LIMIT 1"),
                    format!(
                        "SELECT 1 FROM {from} WHERE {after_cond} AND {upper_cond}{passed} LIMIT 1"
                    ),
                )
            },
        }
    }

    /// Reads the next page of at most `self.limit` rows and `page_bytes` bytes, and moves the
    /// position to its last row. `free_reads` says whether reads below the horizon may be
    /// tried (cleared by the caller when the PROCESS privilege is missing).
    pub async fn read(
        &mut self,
        conn: &mut MySqlConnection,
        flavor: Flavor,
        zone: &Zone,
        opts: &super::PollOptions,
        free_reads: &mut bool,
    ) -> Result<Outcome> {
        if self.sql.is_none() {
            self.sql = Some(self.build(flavor, opts.once, opts.safety_lag, zone));
        }
        if opts.once && self.upper.is_none() {
            let sql = self.sql.as_ref().expect("built above").last_row.clone();
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| self.read_error("reading the end of", &e))?;
            self.upper = Some(match row {
                Some(r) => Some(self.keyset.of(&self.spec.decode_row(&r)?)),
                None => None,
            });
        }
        if matches!(self.upper, Some(None)) {
            return Ok(Outcome::Exhausted);
        }
        if !self.load_decided {
            self.consider_load(conn, flavor, zone, opts, *free_reads)
                .await?;
        }
        if self.load.is_some() {
            return self.read_load(conn, opts).await;
        }
        let (page_bytes, page_rows) = (opts.page_bytes, opts.page_rows);
        let has_free = self.sql.as_ref().is_some_and(|s| s.free.is_some());
        // In a backlog, first read below the horizon without locks; at the horizon (an
        // empty answer), fall through to the locking read.
        if has_free && *free_reads && self.last_full {
            match self.fetch(conn, false, page_bytes, page_rows).await? {
                Ok((rows, _)) if !rows.is_empty() => {
                    debug!(table = %self.name(), rows = rows.len(), "read below the oldest open transaction, without locks");
                    self.held = false;
                    self.moved(&rows);
                    // Not caught up: rows past the horizon may follow.
                    return Ok(Outcome::Rows { rows, full: true });
                }
                Ok(_) => {}
                Err(e) if is_process_privilege_error(&e) => {
                    tracing::info!(table = %self.name(), "no PROCESS privilege to see open transactions (information_schema.INNODB_TRX): every read is a locking read, which is slower on a backlog; GRANT PROCESS ON *.* to sluice's source user to read below the oldest open transaction without locks");
                    *free_reads = false;
                }
                Err(e) => return Err(self.read_error("reading", &e)),
            }
        }
        match self.fetch(conn, true, page_bytes, page_rows).await? {
            Ok((rows, full)) => {
                self.held = false;
                self.last_full = full;
                self.moved(&rows);
                Ok(Outcome::Rows { rows, full })
            }
            // The rows before the held one are dropped too: the page is read again whole.
            Err(e) if is_nowait_conflict(&e) => {
                if !self.held {
                    debug!(table = %self.name(), "a row of an open transaction lies ahead; waiting for it to commit");
                }
                self.held = true;
                self.last_full = false;
                Ok(Outcome::Held)
            }
            Err(e) => Err(self.read_error("reading", &e)),
        }
    }

    /// `--once`: rows up to the end of the table as of start are left after the position.
    /// A page short of full is then no end: the read horizon held those rows back (a
    /// statement still running on the server that may write, or the safety lag), and they
    /// are read once it moves past them.
    pub async fn left_as_of_start(&mut self, conn: &mut MySqlConnection) -> Result<bool> {
        let (Some(Some(upper)), Some(sql), None) = (&self.upper, &self.sql, &self.load) else {
            return Ok(false);
        };
        let mut q = match &self.position {
            None => sqlx::query(AssertSqlSafe(sql.left.0.as_str())),
            Some(pos) => {
                let mut q = sqlx::query(AssertSqlSafe(sql.left.1.as_str()));
                for &i in &sql.binds_after {
                    q = bind_value(q, &pos[i]);
                }
                q
            }
        };
        for &i in &sql.binds_upper {
            q = bind_value(q, &upper[i]);
        }
        let row = q
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.read_error("reading what is left as of start of", &e))?;
        if row.is_some() && !std::mem::replace(&mut self.said_waiting, true) {
            tracing::info!(table = %self.name(), "run --once: rows up to the table's end as of start are held back by a statement still running on the source that may write (information_schema.PROCESSLIST), or by [source] safety_lag_ms; waiting for them");
        }
        Ok(row.is_some())
    }

    /// Resumes a load in primary-key order from a stored position.
    pub fn resume_load(&mut self, after: Vec<Value>, until: Value) {
        self.load = Some(KeyLoad {
            after: Some(after),
            until,
        });
        self.load_decided = true;
    }

    /// Reads by the cursor from the start (a small table, or `key_order_load = false`).
    pub fn no_key_order_load(&mut self) {
        self.load_decided = true;
    }

    /// The position to store after the rows handed out last.
    pub fn stored_position(&self) -> Option<crate::model::Position> {
        let t = &self.spec.model;
        let values = self.position.clone()?;
        Some(match &self.load {
            Some(KeyLoad {
                after: Some(after),
                until,
            }) => self
                .keyset
                .load_position(t, values, after.clone(), until.clone()),
            _ => self.keyset.position(t, values),
        })
    }

    /// Starts a load in primary-key order when it applies: no position yet, a time cursor,
    /// and the oldest open transaction visible (the PROCESS privilege).
    async fn consider_load(
        &mut self,
        conn: &mut MySqlConnection,
        flavor: Flavor,
        zone: &Zone,
        opts: &super::PollOptions,
        free_reads: bool,
    ) -> Result<()> {
        self.load_decided = true;
        let t = &self.spec.model;
        if !opts.key_order_load
            || !free_reads
            || self.position.is_some()
            || !self.keyset.time_cursor(t)
        {
            return Ok(());
        }
        let local = self.local_time_cursor();
        // The same horizon the reads below it use.
        let sql = format!(
            "SELECT {}",
            zone.horizon_sql(local, flavor.mariadb, opts.safety_lag.as_micros() as u64)
        );
        let until: chrono::NaiveDateTime = match sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
        {
            Ok(v) => v,
            Err(e) if is_process_privilege_error(&e) => return Ok(()),
            Err(e) => return Err(self.read_error("reading the horizon for", &e)),
        };
        let until = if local {
            Value::DateTime(until)
        } else {
            Value::Timestamp(until.and_utc())
        };
        tracing::info!(table = %self.name(), until = %until.display(), "initial load: reading in primary-key order, then following the cursor from the horizon measured now");
        self.load = Some(KeyLoad { after: None, until });
        Ok(())
    }

    /// One page of the load in primary-key order. Moves the position to where the cursor
    /// takes over, after this page's last row; the load ends with the table's last row.
    async fn read_load(
        &mut self,
        conn: &mut MySqlConnection,
        opts: &super::PollOptions,
    ) -> Result<Outcome> {
        let t = &self.spec.model;
        let load = self.load.clone().expect("a load under way");
        let pk: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| quote(&t.columns[i].name))
            .collect();
        let phs = placeholders(t, &t.primary_key);
        let (select, from, order) = (self.spec.select_list(), quote(&t.name), pk.join(", "));
        let q = match &load.after {
            None => sqlx::query(AssertSqlSafe(format!(
                "SELECT {select} FROM {from} ORDER BY {order} LIMIT ?"
            ))),
            Some(after) => {
                let (cond, binds) = keyset::condition(&pk, &phs, true, true);
                let mut q = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {select} FROM {from} WHERE {cond} ORDER BY {order} LIMIT ?"
                )));
                for i in binds {
                    q = bind_value(q, &after[i]);
                }
                q
            }
        };
        let page = read_page(
            q,
            conn,
            &self.spec,
            self.limit,
            opts.page_bytes,
            opts.page_rows,
        )
        .await?
        .map_err(|e| self.read_error("reading (in primary-key order)", &e))?;
        if let Some(next) = page.next_limit {
            self.limit = next;
        }
        if let Some(last) = page.rows.last() {
            let mut values = self.keyset.of(last);
            values[0] = just_before(&load.until);
            self.position = Some(values);
            self.load = Some(KeyLoad {
                after: Some(t.primary_key.iter().map(|&i| last[i].clone()).collect()),
                until: load.until.clone(),
            });
        }
        if !page.full {
            // The whole table in key order: the cursor takes over from the horizon.
            tracing::info!(table = %self.name(), from = %load.until.display(), "initial load in primary-key order done: following the cursor");
            self.load = None;
        }
        self.last_full = true;
        Ok(Outcome::Rows {
            rows: page.rows,
            full: true,
        })
    }

    /// The cursor is a DATETIME: local time in the source's zone.
    pub fn local_time_cursor(&self) -> bool {
        matches!(
            self.spec.model.columns[self.keyset.cursor[0]].kind,
            Kind::DateTime { .. }
        )
    }

    /// The zone's clock went back by `by_us` (a daylight-saving change, or a new zone):
    /// rows written since carry cursor values up to that much behind the position, so the
    /// position moves back as far. Rows read again are applied again, harmlessly.
    pub fn rewind(&mut self, by_us: i64) {
        if !self.local_time_cursor() {
            return;
        }
        if let Some(Some(Value::DateTime(t))) = self.position.as_mut().map(|p| p.first_mut()) {
            *t -= chrono::Duration::microseconds(by_us + 1);
            self.last_full = true;
            self.due = Instant::now();
        }
    }

    /// Forgets the SQL (built for a zone that changed).
    pub fn rebuild(&mut self) {
        self.sql = None;
    }

    /// The rows whose cursor value is ahead of the clock it is compared with (`None`: not
    /// a time cursor).
    pub async fn ahead(
        &self,
        conn: &mut MySqlConnection,
        zone: &Zone,
    ) -> Result<Option<crate::source::mysql::Ahead>> {
        let t = &self.spec.model;
        if !self.keyset.time_cursor(t) {
            return Ok(None);
        }
        let c = &t.columns[self.keyset.cursor[0]].name;
        crate::source::mysql::cursor_ahead(conn, &t.name, c, self.local_time_cursor(), zone)
            .await
            .map(Some)
            .map_err(|e| self.read_error("reading the newest cursor values of", &e))
    }

    /// Moves the position to the last row handed out.
    fn moved(&mut self, rows: &[Row]) {
        if let Some(last) = rows.last() {
            self.position = Some(self.keyset.of(last));
        }
    }

    /// Runs one page query (locking, or below the horizon) and decodes its rows as they
    /// arrive. Returns the rows and whether the page was full (the limit was reached or the
    /// bytes ran out). The next page's row limit becomes what `page_bytes` holds of rows as
    /// wide as this page's widest. The outer error is a row sluice cannot decode; the inner one is the
    /// query's.
    async fn fetch(
        &mut self,
        conn: &mut MySqlConnection,
        locking: bool,
        page_bytes: usize,
        page_rows: usize,
    ) -> Result<std::result::Result<(Vec<Row>, bool), sqlx::Error>> {
        let sql = self.sql.as_ref().expect("built before reading");
        let (first, after) = match (&sql.free, locking) {
            (Some((f, a)), false) => (f.as_str(), a.as_str()),
            _ => (sql.first.as_str(), sql.after.as_str()),
        };
        let mut q = match &self.position {
            None => sqlx::query(AssertSqlSafe(first)),
            Some(pos) => {
                let mut q = sqlx::query(AssertSqlSafe(after));
                for &i in &sql.binds_after {
                    q = bind_value(q, &pos[i]);
                }
                q
            }
        };
        if let Some(Some(upper)) = &self.upper {
            for &i in &sql.binds_upper {
                q = bind_value(q, &upper[i]);
            }
        }
        let page = match read_page(q, conn, &self.spec, self.limit, page_bytes, page_rows).await? {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(next) = page.next_limit {
            if next != self.limit {
                debug!(table = %self.name(), rows = next, "page size follows the row width");
            }
            self.limit = next;
        }
        Ok(Ok((page.rows, page.full)))
    }

    fn read_error(&self, what: &str, e: &sqlx::Error) -> Error {
        Error::db(Side::Source, format!("{what} table {:?}", self.name()), e)
    }
}

/// MySQL/MariaDB refuses INNODB_TRX without the PROCESS privilege (error 1227).
fn is_process_privilege_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.message().contains("PROCESS"))
}

/// The locking read found a row held by an open transaction: a row that may still commit
/// inside the page's range. MariaDB answers NOWAIT with 1205, MySQL 8 with 3572.
fn is_nowait_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "HY000" || c == "40001")
        && (db.message().contains("Lock wait timeout") || db.message().contains("NOWAIT")))
}

/// The placeholders binding the values of columns `cols`. A DECIMAL value travels as text;
/// compared with text MySQL would use doubles, so it is cast back to the column's exact type.
fn placeholders(t: &TableModel, cols: &[usize]) -> Vec<String> {
    cols.iter()
        .map(|&i| match t.columns[i].kind {
            Kind::Decimal { precision, scale } => {
                format!("CAST(? AS DECIMAL({precision},{scale}))")
            }
            _ => "?".to_string(),
        })
        .collect()
}

/// The time cursor value one microsecond before `v`: the cursor reads from `v` on.
fn just_before(v: &Value) -> Value {
    let us = chrono::Duration::microseconds(1);
    match v {
        Value::DateTime(t) => Value::DateTime(*t - us),
        Value::Timestamp(t) => Value::Timestamp(*t - us),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::mysql::introspect::{SourceColumn, SourceTable};

    fn reader() -> TableReader {
        let col = |name: &str, kind| SourceColumn {
            name: name.into(),
            column_type: "x".into(),
            kind,
            nullable: false,
            default: None,
        };
        let t = SourceTable {
            name: "orders".into(),
            columns: vec![
                col("order_id", Kind::Text),
                col("created", Kind::DateTime { fsp: 6 }),
            ],
            primary_key: vec!["order_id".into()],
            indexes: vec![],
            excluded: vec![],
        };
        let keyset = Keyset::resolve(&t, &["created".into()], &[0]).unwrap();
        let spec = ReadSpec::new(&t, vec![0], Default::default(), &keyset.columns);
        let handle = crate::telemetry::register("poll_table_unit");
        TableReader::new(0, spec, keyset, handle, None, 100)
    }

    #[test]
    fn each_flavour_gets_its_own_locking_clause() {
        let r = reader();
        let zone = Zone {
            name: "+02:00".into(),
            offset_us: 7_200_000_000,
        };
        let mysql = r.build(
            Flavor::parse("8.4.3"),
            true,
            Duration::from_millis(20),
            &zone,
        );
        let mariadb = r.build(
            Flavor::parse("10.11.9-MariaDB-0+deb12u1"),
            true,
            Duration::from_millis(20),
            &zone,
        );
        for sql in [&mysql.first, &mysql.after] {
            assert!(sql.ends_with("LIMIT ? FOR SHARE NOWAIT"), "{sql}");
            assert!(!sql.contains("LOCK IN SHARE MODE"), "{sql}");
        }
        for sql in [&mariadb.first, &mariadb.after] {
            assert!(sql.ends_with("LIMIT ? LOCK IN SHARE MODE NOWAIT"), "{sql}");
        }
        // Below the oldest statement still running that may write, less the safety lag.
        let statements = zone.statements_sql(true, false);
        assert!(statements.starts_with(
            "(SELECT CONVERT_TZ(UTC_TIMESTAMP(6), '+00:00', '+02:00') - INTERVAL COALESCE(MAX(TIME) + 1, 0) SECOND \
             FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
        ));
        assert!(zone.statements_sql(true, true).contains("TIME_MS"));
        assert_eq!(
            mysql.after,
            format!(
                "SELECT `order_id`, `created`, CASE WHEN YEAR(`created`) = 0 OR MONTH(`created`) = 0 OR DAYOFMONTH(`created`) = 0 THEN 1 ELSE 0 END \
                 FROM `orders` WHERE `created` >= ? AND (`created` > ? OR (`created` = ? AND `order_id` > ?)) \
                 AND `created` <= ? AND (`created` < ? OR (`created` = ? AND `order_id` <= ?)) \
                 AND `created` < {statements} - INTERVAL 20000 MICROSECOND \
                 ORDER BY `created`, `order_id` LIMIT ? FOR SHARE NOWAIT"
            )
        );
        // Reads below the horizon take no lock on either server.
        let (free_first, _) = mysql.free.as_ref().unwrap();
        assert!(free_first.ends_with("LIMIT ?") && free_first.contains("INNODB_TRX"));
    }
}
