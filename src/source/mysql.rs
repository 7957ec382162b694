//! MySQL/MariaDB: connection, table introspection, and the keyset poller.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use sea_orm::sqlx::mysql::{MySqlArguments, MySqlConnectOptions, MySqlRow};
use sea_orm::sqlx::{self, AssertSqlSafe, ConnectOptions, MySql, MySqlConnection, Row as _};

use super::schema::{map_column, quote_mysql, Column, Kind, TableSchema};
use super::{Page, Source};
use crate::config::{host_port, redact};
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
    let mut columns: Vec<Column> = Vec::with_capacity(rows.len());
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
        columns.push(map_column(
            table,
            &get_s(0)?,
            &get_s(1)?,
            &get_s(2)?,
            nullable != 0,
            get_u(4)?,
            get_u(5)?,
            get_u(6)?,
        )?);
    }
    let pk: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, ctx("primary key"), &e))?;
    TableSchema::resolve(table, columns, cursor, primary_key, &pk)
}

/// The SQL expression that selects a column so it decodes as its [`Kind`] says.
fn select_expr(c: &Column) -> String {
    let q = quote_mysql(&c.name);
    match c.kind {
        Kind::CastText => format!("CAST({q} AS CHAR)"),
        Kind::CastInt => format!("CAST({q} AS SIGNED)"),
        Kind::Bits(n) => format!("LPAD(BIN({q}), {n}, '0')"),
        _ => q,
    }
}

/// `(k1, k2, …) OP (?, ?, …)` in the expanded form MariaDB turns into an index range scan
/// (it scans the whole index for the row-value form). `strict` picks `>`/`<` over
/// `>=`/`<=` for the last column. Returns the SQL and, for each `?`, the key index to bind.
fn keyset_condition(cols: &[String], greater: bool, strict: bool) -> (String, Vec<usize>) {
    let (op, op_eq) = if greater { (">", ">=") } else { ("<", "<=") };
    fn rest(cols: &[String], i: usize, op: &str, last: &str) -> (String, Vec<usize>) {
        if i == cols.len() - 1 {
            return (format!("{} {last} ?", cols[i]), vec![i]);
        }
        let (inner, mut binds) = rest(cols, i + 1, op, last);
        let mut b = vec![i, i];
        b.append(&mut binds);
        (
            format!("({c} {op} ? OR ({c} = ? AND {inner}))", c = cols[i]),
            b,
        )
    }
    let last = if strict { op } else { op_eq };
    let (body, binds) = rest(cols, 0, op, last);
    if cols.len() == 1 {
        return (body, binds);
    }
    let mut all = vec![0];
    all.extend(binds);
    (format!("{} {op_eq} ? AND {body}", cols[0]), all)
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

/// Decodes one column of a result row as its kind says.
fn decode(row: &MySqlRow, i: usize, kind: Kind) -> std::result::Result<Value, sqlx::Error> {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match kind {
        Kind::Bool => opt(row.try_get::<Option<i64>, _>(i)?, |v| Value::Bool(v != 0)),
        Kind::Int | Kind::CastInt => opt(row.try_get::<Option<i64>, _>(i)?, Value::Int),
        Kind::UInt => opt(row.try_get::<Option<u64>, _>(i)?, Value::UInt),
        Kind::Float32 => opt(row.try_get::<Option<f32>, _>(i)?, |v| {
            Value::Float(v as f64)
        }),
        Kind::Float64 => opt(row.try_get::<Option<f64>, _>(i)?, Value::Float),
        Kind::CastText | Kind::Text | Kind::Bits(_) => {
            opt(row.try_get::<Option<String>, _>(i)?, Value::Text)
        }
        Kind::Bytes => opt(row.try_get::<Option<Vec<u8>>, _>(i)?, Value::Bytes),
        Kind::Date => opt(row.try_get(i)?, Value::Date),
        Kind::DateTime => opt(row.try_get(i)?, Value::DateTime),
        Kind::Timestamp => opt(row.try_get(i)?, Value::Timestamp),
    })
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
    binds_after: Vec<usize>,
    binds_upper: Vec<usize>,
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
        let select = schema
            .columns
            .iter()
            .map(select_expr)
            .collect::<Vec<_>>()
            .join(", ");
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
        let (upper_cond, binds_upper) = keyset_condition(&cols, false, false);
        let (after_cond, binds_after) = keyset_condition(&cols, true, true);
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
            where_of(vec![after_cond])
        );
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
    for (i, c) in schema.columns.iter().enumerate() {
        match decode(r, i, c.kind) {
            Ok(v) => row.push(v),
            Err(e) => {
                let key = schema
                    .primary_key
                    .iter()
                    .map(|&k| match decode(r, k, schema.columns[k].kind) {
                        Ok(v) => format!("{}={}", schema.columns[k].name, v.display()),
                        Err(_) => format!("{}=?", schema.columns[k].name),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::BadRow {
                    table: schema.name.clone(),
                    key,
                    reason: format!(
                        "column {:?} ({}) cannot be read: {e}",
                        c.name, c.column_type
                    ),
                });
            }
        }
    }
    Ok(row)
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
        let mut q = match &self.position {
            None => sqlx::query(AssertSqlSafe(self.sql_first.as_str())),
            Some(pos) => {
                let mut q = sqlx::query(AssertSqlSafe(self.sql_after.as_str()));
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
        let raw = match q.fetch_all(&mut self.conn).await {
            Ok(raw) => raw,
            Err(e) if is_nowait_conflict(&e) => {
                if !self.held {
                    debug!(table = %self.schema.name, "a row of an open transaction lies ahead; waiting for it to commit");
                }
                self.held = true;
                return Ok(Page {
                    rows: Vec::new(),
                    caught_up: false,
                    held: true,
                });
            }
            Err(e) => {
                return Err(Error::db(
                    Side::Source,
                    format!("reading table {:?}", self.schema.name),
                    &e,
                ))
            }
        };
        self.held = false;
        let mut rows = Vec::with_capacity(raw.len());
        for r in &raw {
            rows.push(decode_row(&self.schema, r)?);
        }
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
        let (sql, binds) = keyset_condition(&cols, true, true);
        assert_eq!(
            sql,
            "`a` >= ? AND (`a` > ? OR (`a` = ? AND (`b` > ? OR (`b` = ? AND `c` > ?))))"
        );
        assert_eq!(binds, vec![0, 0, 0, 1, 1, 2]);
        let (sql, binds) = keyset_condition(&cols[..1], false, false);
        assert_eq!(sql, "`a` <= ?");
        assert_eq!(binds, vec![0]);
    }
}
