//! MySQL/MariaDB: connection, table introspection, and the keyset poller.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::debug;

use sea_orm::sqlx::mysql::{MySqlArguments, MySqlConnectOptions, MySqlRow};
use sea_orm::sqlx::{self, AssertSqlSafe, ConnectOptions, MySql, MySqlConnection, Row as _};

use super::schema::{map_column, quote_mysql, Column, ColumnInfo, Kind, MapOptions, TableSchema};
use super::{Page, Source};
use crate::config::{host_port, redact, ZeroDates};
use crate::error::{Error, Result, Side};
use crate::value::{Row, Value};

type Query<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

/// Opens one connection to the source. The driver sets the session time zone to UTC,
/// which is what TIMESTAMP columns are read in.
pub async fn connect(url: &str) -> Result<MySqlConnection> {
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("source URL {} is not valid: {e}", redact(url))))?;
    opts.connect().await.map_err(|e| {
        let mut err = Error::db(
            Side::Source,
            format!("cannot connect to {} (URL {})", host_port(url), redact(url)),
            &e,
        );
        if let Error::Database { message, .. } = &mut err {
            message.push_str(
                "; check that MySQL/MariaDB is running there and the URL (--source, SLUICE_SOURCE_URL, [source] url) is right",
            );
        }
        err
    })
}

/// Reads a table's columns and primary key from `information_schema` and resolves the
/// configured cursor against them.
pub async fn introspect(
    conn: &mut MySqlConnection,
    table: &str,
    cursor: &[String],
    primary_key: Option<&[String]>,
    opts: MapOptions,
    zero_dates: ZeroDates,
) -> Result<TableSchema> {
    let ctx = |what: &str| format!("introspecting table {table:?} ({what})");
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                IS_NULLABLE = 'YES', CAST(NUMERIC_PRECISION AS UNSIGNED), \
                CAST(NUMERIC_SCALE AS UNSIGNED), CAST(DATETIME_PRECISION AS UNSIGNED) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, ctx("columns"), &e))?;
    if rows.is_empty() {
        let db: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Source, ctx("database"), &e))?;
        return Err(Error::Schema(format!(
            "table {table:?} does not exist in source database {:?}; check the name in [[tables]] (names are case-sensitive on most servers)",
            db.unwrap_or_default()
        )));
    }
    let mut infos: Vec<ColumnInfo> = Vec::with_capacity(rows.len());
    for r in &rows {
        let get_s = |i: usize| -> Result<String> {
            r.try_get::<String, _>(i)
                .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))
        };
        let get_u = |i: usize| -> Result<Option<u64>> {
            r.try_get::<Option<u64>, _>(i)
                .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))
        };
        let nullable: i64 = r
            .try_get(3)
            .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))?;
        infos.push(ColumnInfo {
            name: get_s(0)?,
            data_type: get_s(1)?,
            column_type: get_s(2)?,
            nullable: nullable != 0,
            numeric_precision: get_u(4)?,
            numeric_scale: get_u(5)?,
            datetime_precision: get_u(6)?,
            json_check: false,
        });
    }
    // MariaDB's JSON is an alias of LONGTEXT plus a `json_valid(`col`)` CHECK constraint
    // (DATA_TYPE says `longtext`); MySQL reports `json` itself and has no TABLE_NAME in
    // CHECK_CONSTRAINTS, so only MariaDB is asked.
    if infos
        .iter()
        .any(|c| c.data_type.eq_ignore_ascii_case("longtext"))
    {
        let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Source, ctx("server version"), &e))?;
        if version.to_ascii_lowercase().contains("mariadb") {
            let checks: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Source, ctx("check constraints"), &e))?;
            for c in &mut infos {
                let clause = format!("json_valid({})", quote_mysql(&c.name));
                c.json_check = checks.iter().any(|k| k.trim() == clause);
            }
        }
    }
    let columns: Vec<Column> = infos
        .iter()
        .map(|i| map_column(table, i, opts))
        .collect::<Result<_>>()?;
    let pk: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, ctx("primary key"), &e))?;
    TableSchema::resolve(table, columns, cursor, primary_key, &pk, zero_dates)
}

/// The SQL expression that selects column `i` so it decodes as its [`Kind`] says.
///
/// With `zero_dates = "null"`, a DATE, DATETIME or TIMESTAMP outside the keyset is
/// selected through a CASE that turns a zero or partial date (year, month or day 0, which
/// neither chrono nor PostgreSQL can hold) into NULL; the CASE keeps the column's type and
/// fractional digits. Keyset columns are selected as they are: a zero date there fails the
/// row with a message rather than becoming a NULL the keyset cannot order by (see
/// [`select_list`]).
fn select_expr(t: &TableSchema, i: usize) -> String {
    let c = &t.columns[i];
    let q = quote_mysql(&c.name);
    match c.kind {
        Kind::CastText | Kind::Decimal(..) => format!("CAST({q} AS CHAR)"),
        Kind::CastInt => format!("CAST({q} AS SIGNED)"),
        Kind::Bits(n) => format!("LPAD(BIN({q}), {n}, '0')"),
        Kind::Date | Kind::DateTime | Kind::Timestamp
            if t.zero_dates == ZeroDates::Null && !t.key.contains(&i) =>
        {
            format!(
                "CASE WHEN {} THEN NULL ELSE {q} END",
                zero_date_condition(&q)
            )
        }
        _ => q,
    }
}

/// `CASE WHEN` condition that is true for a zero or partial date.
fn zero_date_condition(q: &str) -> String {
    format!("YEAR({q}) = 0 OR MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0")
}

/// Every column as [`select_expr`] selects it, then one flag per
/// [`TableSchema::zero_date_checked`] column: 1 when it holds a zero date.
pub(crate) fn select_list(t: &TableSchema) -> String {
    let mut exprs: Vec<String> = (0..t.columns.len()).map(|i| select_expr(t, i)).collect();
    for &i in t.zero_date_checked() {
        exprs.push(format!(
            "CASE WHEN {} THEN 1 ELSE 0 END",
            zero_date_condition(&quote_mysql(&t.columns[i].name))
        ));
    }
    exprs.join(", ")
}

/// `(k1, k2, …) OP (?, ?, …)` in the expanded form MariaDB turns into an index range scan
/// (it scans the whole index for the row-value form). `strict` picks `>`/`<` over
/// `>=`/`<=` for the last column. `phs[i]` is the placeholder of column `i` (`?`, or a
/// cast around it). Returns the SQL and, for each `?`, the key index to bind.
fn keyset_condition(
    cols: &[String],
    phs: &[String],
    greater: bool,
    strict: bool,
) -> (String, Vec<usize>) {
    let (op, op_eq) = if greater { (">", ">=") } else { ("<", "<=") };
    fn rest(
        cols: &[String],
        phs: &[String],
        i: usize,
        op: &str,
        last: &str,
    ) -> (String, Vec<usize>) {
        if i == cols.len() - 1 {
            return (format!("{} {last} {}", cols[i], phs[i]), vec![i]);
        }
        let (inner, mut binds) = rest(cols, phs, i + 1, op, last);
        let mut b = vec![i, i];
        b.append(&mut binds);
        (
            format!(
                "({c} {op} {p} OR ({c} = {p} AND {inner}))",
                c = cols[i],
                p = phs[i]
            ),
            b,
        )
    }
    let last = if strict { op } else { op_eq };
    let (body, binds) = rest(cols, phs, 0, op, last);
    if cols.len() == 1 {
        return (body, binds);
    }
    let mut all = vec![0];
    all.extend(binds);
    (format!("{} {op_eq} {} AND {body}", cols[0], phs[0]), all)
}

/// Binds one value as the MySQL type that compares correctly with its column.
fn bind_value<'q>(q: Query<'q>, v: &Value) -> Query<'q> {
    match v {
        Value::Null => q.bind(None::<i64>),
        Value::Bool(b) => q.bind(*b),
        Value::Int(i) => q.bind(*i),
        Value::UInt(u) => q.bind(*u),
        Value::Float(f) => q.bind(*f),
        Value::Text(s) => q.bind(s.clone()),
        Value::Bytes(b) => q.bind(b.clone()),
        Value::Date(d) => q.bind(*d),
        Value::DateTime(t) => q.bind(*t),
        Value::Timestamp(t) => q.bind(*t),
    }
}

/// Decodes column `i` of a result row as its kind says; the error is the reason, for a
/// message that also names the table, key and column.
fn decode(t: &TableSchema, row: &MySqlRow, i: usize) -> std::result::Result<Value, String> {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    let kind = t.columns[i].kind;
    let r = match kind {
        Kind::Bool => match row.try_get::<Option<i64>, _>(i) {
            Ok(Some(v @ (0 | 1))) => Ok(Value::Bool(v == 1)),
            Ok(Some(v)) => {
                return Err(format!(
                    "TINYINT(1) holds {v}, which is neither 0 nor 1, so it is not a boolean; set `tinyint1_as_boolean = false` in the table's [[tables]] entry to replicate TINYINT(1) as smallint (an existing target column must then be changed to smallint)"
                ))
            }
            Ok(None) => Ok(Value::Null),
            Err(e) => Err(e),
        },
        Kind::Int | Kind::CastInt => row.try_get::<Option<i64>, _>(i).map(|v| opt(v, Value::Int)),
        Kind::UInt => row.try_get::<Option<u64>, _>(i).map(|v| opt(v, Value::UInt)),
        Kind::Float32 => row
            .try_get::<Option<f32>, _>(i)
            .map(|v| opt(v, |v| Value::Float(v as f64))),
        Kind::Float64 => row.try_get::<Option<f64>, _>(i).map(|v| opt(v, Value::Float)),
        Kind::CastText | Kind::Decimal(..) | Kind::Text | Kind::Bits(_) => {
            row.try_get::<Option<String>, _>(i).map(|v| opt(v, Value::Text))
        }
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i).map(|v| opt(v, Value::Bytes)),
        Kind::Date => row.try_get(i).map(|v| opt(v, Value::Date)),
        Kind::DateTime => row.try_get(i).map(|v| opt(v, Value::DateTime)),
        Kind::Timestamp => row.try_get(i).map(|v| opt(v, Value::Timestamp)),
    };
    r.map_err(|e| e.to_string())
}

/// Why a zero date in column `i` stops the row, and how to fix it.
fn zero_date_reason(t: &TableSchema, i: usize) -> String {
    let fix = if t.key.contains(&i) {
        "a cursor or primary-key column cannot hold one (it could not be ordered or bound); fix the row on the source"
    } else {
        "set `zero_dates = \"null\"` in [source] to replicate such dates as NULL, or fix the row on the source"
    };
    format!("it holds a zero date (year, month or day 0), which PostgreSQL cannot store; {fix}")
}

/// The number of rows in a table as InnoDB estimates it (`information_schema.TABLES`):
/// free to ask, and close enough to decide how to load a backlog.
pub async fn estimate_rows(conn: &mut MySqlConnection, table: &str) -> Result<u64> {
    let rows: Option<Option<u64>> = sqlx::query_scalar(
        "SELECT CAST(TABLE_ROWS AS UNSIGNED) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| {
        Error::db(
            Side::Source,
            format!("estimating the rows of {table:?}"),
            &e,
        )
    })?;
    Ok(rows.flatten().unwrap_or(0))
}

/// Reads a table in keyset order past a watermark, one page per [`Source::read`].
pub struct KeysetPoller {
    conn: MySqlConnection,
    schema: Arc<TableSchema>,
    /// Keyset of the last row handed out; `None` before the first.
    position: Option<Vec<Value>>,
    /// In `--once` mode: the last keyset as of start; nothing past it is read.
    upper: Option<Vec<Value>>,
    /// Set when there is nothing to read at all (`--once` on an empty table).
    exhausted: bool,
    /// The last read met a row of an open transaction and returned nothing.
    held: bool,
    sql_first: String,
    sql_after: String,
    /// Non-locking forms of the reads, bounded by the read horizon (time cursors only).
    free: Option<FreeReads>,
    /// The last page was full: a backlog, where reads below the horizon pay off.
    last_full: bool,
    binds_after: Vec<usize>,
    binds_upper: Vec<usize>,
}

/// Reads below the read horizon: rows whose time cursor is older than the oldest open
/// InnoDB transaction (less a second, for `trx_started`'s whole seconds, and the safety lag)
/// cannot belong to a transaction that may still commit, so they need no locking read. That
/// makes a backlog a covering-index scan instead of a row lock (and a clustered-index visit)
/// per row. Reading `information_schema.INNODB_TRX` needs the PROCESS privilege; without it
/// every read is a locking read.
struct FreeReads {
    first: String,
    after: String,
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

impl KeysetPoller {
    /// `position` is the stored watermark. With `once`, the end of the table as of now is
    /// recorded and the poller reports caught-up when it gets there. On a DATETIME or
    /// TIMESTAMP first cursor column, reads stay `safety_lag` behind the server's clock.
    pub async fn new(
        mut conn: MySqlConnection,
        schema: Arc<TableSchema>,
        position: Option<Vec<Value>>,
        once: bool,
        safety_lag: Duration,
    ) -> Result<Self> {
        let cols: Vec<String> = schema
            .key
            .iter()
            .map(|&i| quote_mysql(&schema.columns[i].name))
            .collect();
        let select = select_list(&schema);
        let from = quote_mysql(&schema.name);
        let order = cols.join(", ");
        let upper = if once {
            let desc = cols
                .iter()
                .map(|c| format!("{c} DESC"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT {select} FROM {from} ORDER BY {desc} LIMIT 1");
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_optional(&mut conn)
                .await
                .map_err(|e| {
                    Error::db(
                        Side::Source,
                        format!("reading the end of table {:?}", schema.name),
                        &e,
                    )
                })?;
            match row {
                Some(r) => Some(schema.key_of(&decode_row(&schema, &r)?)),
                None => None,
            }
        } else {
            None
        };
        // Reads happen in READ COMMITTED: the locking read below then takes no gap locks,
        // so it never blocks the application's inserts.
        sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut conn)
            .await
            .map_err(|e| Error::db(Side::Source, "setting the read isolation level", &e))?;
        let first_cursor = &schema.columns[schema.cursor[0]];
        let time_cursor = matches!(first_cursor.kind, Kind::DateTime | Kind::Timestamp);
        // A DECIMAL keyset value travels as text; compared with text MySQL would use
        // doubles, so it is cast back to the column's exact type.
        let phs: Vec<String> = schema
            .key
            .iter()
            .map(|&i| match schema.columns[i].kind {
                Kind::Decimal(p, s) => format!("CAST(? AS DECIMAL({p},{s}))"),
                _ => "?".to_string(),
            })
            .collect();
        let (upper_cond, binds_upper) = keyset_condition(&cols, &phs, false, false);
        let (after_cond, binds_after) = keyset_condition(&cols, &phs, true, true);
        let mut common = Vec::new();
        if upper.is_some() {
            common.push(upper_cond);
        }
        if time_cursor {
            // Server-set times are taken as a statement starts, a moment before its row is
            // in the index; the safety lag covers that moment (and client clocks, if raised).
            common.push(format!(
                "{} < NOW(6) - INTERVAL {} MICROSECOND",
                quote_mysql(&first_cursor.name),
                safety_lag.as_micros() as u64
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
        // A locking read that gives up at once on a locked row: when it succeeds, no row of
        // an open transaction lies between the watermark and the page's last row, so no row
        // can commit behind the new watermark later (a late commit). When it meets one, the
        // page is retried after the poll interval.
        let sql_first = format!(
            "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ? LOCK IN SHARE MODE NOWAIT",
            where_of(vec![])
        );
        let sql_after = format!(
            "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ? LOCK IN SHARE MODE NOWAIT",
            where_of(vec![after_cond.clone()])
        );
        let free = time_cursor.then(|| {
            let horizon = format!(
                "{} < (SELECT LEAST(NOW(6), COALESCE(MIN(trx_started), NOW(6)) - INTERVAL 1 SECOND) \
                 - INTERVAL {} MICROSECOND FROM information_schema.INNODB_TRX)",
                quote_mysql(&first_cursor.name),
                safety_lag.as_micros() as u64
            );
            FreeReads {
                first: format!(
                    "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ?",
                    where_of(vec![horizon.clone()])
                ),
                after: format!(
                    "SELECT {select} FROM {from}{} ORDER BY {order} LIMIT ?",
                    where_of(vec![after_cond, horizon])
                ),
            }
        });
        Ok(KeysetPoller {
            // `--once` on a table that was empty at start: nothing to catch up on.
            exhausted: once && upper.is_none(),
            conn,
            schema,
            position,
            upper,
            held: false,
            sql_first,
            sql_after,
            free,
            last_full: true,
            binds_after,
            binds_upper,
        })
    }

    pub fn position(&self) -> Option<&[Value]> {
        self.position.as_deref()
    }
}

/// Decodes a whole result row, naming the table, key and column of a value that fails.
pub fn decode_row(schema: &TableSchema, r: &MySqlRow) -> Result<Row> {
    let mut row = Vec::with_capacity(schema.columns.len());
    // The zero-date flags follow the columns; a set flag fails its column's value.
    let n = schema.columns.len();
    let mut zero_at = None;
    for (j, &i) in schema.zero_date_checked().iter().enumerate() {
        let flag: i64 = r.try_get(n + j).map_err(|e| Error::BadRow {
            table: schema.name.clone(),
            key: "?".into(),
            reason: format!(
                "the zero-date flag of column {:?} cannot be read: {e}",
                schema.columns[i].name
            ),
        })?;
        if flag != 0 {
            zero_at = Some(i);
            break;
        }
    }
    for (i, c) in schema.columns.iter().enumerate() {
        let value = if zero_at == Some(i) {
            Err(zero_date_reason(schema, i))
        } else {
            decode(schema, r, i)
        };
        match value {
            Ok(v) => row.push(v),
            Err(reason) => {
                let key = schema
                    .primary_key
                    .iter()
                    .map(|&k| match decode(schema, r, k) {
                        Ok(v) => format!("{}={}", schema.columns[k].name, v.display()),
                        Err(_) => format!("{}=?", schema.columns[k].name),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::BadRow {
                    table: schema.name.clone(),
                    key,
                    reason: format!("column {:?} ({}): {reason}", c.name, c.column_type),
                });
            }
        }
    }
    Ok(row)
}

impl KeysetPoller {
    /// Runs one page query (locking, or below the horizon) and decodes its rows as they
    /// arrive. The outer error is a row sluice cannot decode; the inner one is the query's.
    async fn fetch(
        &mut self,
        locking: bool,
        limit: usize,
    ) -> Result<std::result::Result<Vec<Row>, sqlx::Error>> {
        let (first, after) = match (&self.free, locking) {
            (Some(f), false) => (f.first.as_str(), f.after.as_str()),
            _ => (self.sql_first.as_str(), self.sql_after.as_str()),
        };
        let mut q = match &self.position {
            None => sqlx::query(AssertSqlSafe(first)),
            Some(pos) => {
                let mut q = sqlx::query(AssertSqlSafe(after));
                for &i in &self.binds_after {
                    q = bind_value(q, &pos[i]);
                }
                q
            }
        };
        if let Some(upper) = &self.upper {
            for &i in &self.binds_upper {
                q = bind_value(q, &upper[i]);
            }
        }
        q = q.bind(limit as u64);
        // Rows are decoded as they arrive, while the server is still sending the page.
        let mut rows = Vec::with_capacity(limit.min(16_384));
        let mut stream = q.fetch(&mut self.conn);
        while let Some(r) = stream.next().await {
            match r {
                Ok(r) => rows.push(decode_row(&self.schema, &r)?),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(rows))
    }

    fn read_error(&self, e: &sqlx::Error) -> Error {
        Error::db(
            Side::Source,
            format!("reading table {:?}", self.schema.name),
            e,
        )
    }
}

impl Source for KeysetPoller {
    async fn read(&mut self, limit: usize) -> Result<Page> {
        if self.exhausted {
            return Ok(Page {
                rows: Vec::new(),
                caught_up: true,
                held: false,
            });
        }
        // In a backlog, first read below the horizon without locks; at the horizon (an
        // empty answer), fall through to the locking read.
        if self.free.is_some() && self.last_full {
            match self.fetch(false, limit).await? {
                Ok(rows) if !rows.is_empty() => {
                    if self.position.is_none() || self.last_full {
                        debug!(table = %self.schema.name, rows = rows.len(), "read below the oldest open transaction, without locks");
                    }
                    self.position = Some(self.schema.key_of(rows.last().expect("not empty")));
                    self.held = false;
                    // Not caught up: rows past the horizon may follow.
                    return Ok(Page {
                        rows,
                        caught_up: false,
                        held: false,
                    });
                }
                Ok(_) => {}
                Err(e) if is_process_privilege_error(&e) => {
                    tracing::info!(table = %self.schema.name, "no PROCESS privilege to see open transactions (information_schema.INNODB_TRX): every read is a locking read, which is slower on a backlog; GRANT PROCESS ON *.* to sluice's source user to read below the oldest open transaction without locks");
                    self.free = None;
                }
                Err(e) => return Err(self.read_error(&e)),
            }
        }
        let rows = match self.fetch(true, limit).await? {
            Ok(rows) => rows,
            // The rows before the held one are dropped too: the page is read again whole.
            Err(e) if is_nowait_conflict(&e) => {
                if !self.held {
                    debug!(table = %self.schema.name, "a row of an open transaction lies ahead; waiting for it to commit");
                }
                self.held = true;
                self.last_full = false;
                return Ok(Page {
                    rows: Vec::new(),
                    caught_up: false,
                    held: true,
                });
            }
            Err(e) => return Err(self.read_error(&e)),
        };
        self.held = false;
        self.last_full = rows.len() == limit;
        if let Some(last) = rows.last() {
            self.position = Some(self.schema.key_of(last));
        }
        Ok(Page {
            caught_up: rows.len() < limit,
            held: false,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_condition_uses_the_range_friendly_form() {
        let cols = vec!["`a`".to_string(), "`b`".to_string(), "`c`".to_string()];
        let q = vec!["?".to_string(); 3];
        let (sql, binds) = keyset_condition(&cols, &q, true, true);
        assert_eq!(
            sql,
            "`a` >= ? AND (`a` > ? OR (`a` = ? AND (`b` > ? OR (`b` = ? AND `c` > ?))))"
        );
        assert_eq!(binds, vec![0, 0, 0, 1, 1, 2]);
        let (sql, binds) = keyset_condition(&cols[..1], &q[..1], false, false);
        assert_eq!(sql, "`a` <= ?");
        assert_eq!(binds, vec![0]);
    }
}
