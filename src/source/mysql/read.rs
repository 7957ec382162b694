//! How a table's rows are selected from MySQL and decoded into [`Value`]s, column by column
//! as its [`Kind`] says, and what happens to zero dates.

use std::sync::Arc;

use sea_orm::sqlx::mysql::{MySqlArguments, MySqlRow};
use sea_orm::sqlx::{self, MySql, Row as _};

use super::introspect::SourceTable;
use super::quote;
use crate::config::ZeroDates;
use crate::error::{Error, Result};
use crate::model::{Column, Kind, TableModel};
use crate::value::{Row, Value};

/// The read form of one table: its model, its select list, and its zero-date rules.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub model: Arc<TableModel>,
    /// Per column: a zero date fails the row instead of becoming NULL.
    strict: Vec<bool>,
    /// Per column: strict because the caller needs it ordered (a keyset column).
    keyed: Vec<bool>,
    /// Columns whose zero-date flag is selected after the columns (the strict date ones):
    /// sqlx reads a `0000-00-00` as NULL and refuses `2024-00-00`, so the reader selects a
    /// flag for each and fails the row when it is set.
    flagged: Vec<usize>,
    select: String,
    /// The columns `exclude_columns` left out that the table had in this shape.
    pub excluded: Vec<String>,
}

impl ReadSpec {
    /// `key` is the primary key (column indexes). `keyed` are columns that must hold real
    /// values to be ordered or bound (a polling keyset): a zero date there always fails the
    /// row. Elsewhere a zero date becomes NULL (`zero_dates = "null"`, and the target column
    /// then allows NULL) or fails the row (`"error"`).
    pub fn new(
        source: &SourceTable,
        key: Vec<usize>,
        zero_dates: ZeroDates,
        keyed: &[usize],
    ) -> ReadSpec {
        let n = source.columns.len();
        let keyed: Vec<bool> = (0..n).map(|i| keyed.contains(&i)).collect();
        let strict: Vec<bool> = (0..n)
            .map(|i| keyed[i] || zero_dates == ZeroDates::Error)
            .collect();
        let columns: Vec<Column> = source
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                name: c.name.clone(),
                source_type: c.column_type.clone(),
                kind: c.kind,
                nullable: c.nullable,
                null_on_zero_date: c.kind.is_date() && !strict[i],
                default: c.default.clone(),
                renamed_from: None,
                target_type: None,
            })
            .collect();
        let flagged: Vec<usize> = (0..n)
            .filter(|&i| columns[i].kind.is_date() && strict[i])
            .collect();
        let model = Arc::new(TableModel {
            name: source.name.clone(),
            columns,
            primary_key: key,
            indexes: source.indexes.clone(),
            version: 1,
        });
        let mut spec = ReadSpec {
            model,
            strict,
            keyed,
            flagged,
            select: String::new(),
            excluded: source.excluded.clone(),
        };
        let mut exprs: Vec<String> = (0..n).map(|i| spec.select_expr(i)).collect();
        for &i in &spec.flagged {
            exprs.push(format!(
                "CASE WHEN {} THEN 1 ELSE 0 END",
                zero_date_condition(&quote(&spec.model.columns[i].name))
            ));
        }
        spec.select = exprs.join(", ");
        spec
    }

    /// Every column as [`Self::select_expr`] selects it, then the zero-date flags.
    pub fn select_list(&self) -> &str {
        &self.select
    }

    /// How many expressions [`Self::select_list`] selects: the columns, then the flags.
    pub fn select_width(&self) -> usize {
        self.model.columns.len() + self.flagged.len()
    }

    /// Whether a zero date in column `i` arrives as NULL.
    pub fn zero_date_to_null(&self, i: usize) -> bool {
        self.model.columns[i].kind.is_date() && !self.strict[i]
    }

    /// The SQL expression that selects column `i` so it decodes as its [`Kind`] says.
    ///
    /// A date outside the strict columns is selected through a CASE that turns a zero or
    /// partial date (year, month or day 0, which neither chrono nor PostgreSQL can hold)
    /// into NULL; the CASE keeps the column's type and fractional digits.
    pub fn select_expr(&self, i: usize) -> String {
        let c = &self.model.columns[i];
        let q = quote(&c.name);
        match c.kind {
            Kind::Decimal { .. } | Kind::Enum | Kind::Set | Kind::Time { .. } => {
                format!("CAST({q} AS CHAR)")
            }
            // MySQL's native JSON type; MariaDB's JSON is LONGTEXT and reads as text.
            Kind::Json if c.source_type.eq_ignore_ascii_case("json") => {
                format!("CAST({q} AS CHAR)")
            }
            Kind::Year => format!("CAST({q} AS SIGNED)"),
            Kind::Bits(n) => format!("LPAD(BIN({q}), {n}, '0')"),
            k if k.is_date() && !self.strict[i] => {
                format!(
                    "CASE WHEN {} THEN NULL ELSE {q} END",
                    zero_date_condition(&q)
                )
            }
            _ => q,
        }
    }

    /// Decodes a whole result row (selected with [`Self::select_list`]), naming the table,
    /// key and column of a value that fails.
    pub fn decode_row(&self, r: &MySqlRow) -> Result<Row> {
        let t = &self.model;
        let n = t.columns.len();
        // The zero-date flags follow the columns; a set flag fails its column's value.
        let mut zero_at = None;
        for (j, &i) in self.flagged.iter().enumerate() {
            let flag: i64 = r.try_get(n + j).map_err(|e| Error::BadRow {
                table: t.name.clone(),
                key: "?".into(),
                reason: format!(
                    "the zero-date flag of column {:?} cannot be read: {e}",
                    t.columns[i].name
                ),
            })?;
            if flag != 0 {
                zero_at = Some(i);
                break;
            }
        }
        let mut row = Vec::with_capacity(n);
        for (i, c) in t.columns.iter().enumerate() {
            let value = if zero_at == Some(i) {
                Err(self.zero_date_reason(i))
            } else {
                decode(c.kind, r, i)
            };
            match value {
                Ok(v) => row.push(v),
                Err(reason) => {
                    let key = t
                        .primary_key
                        .iter()
                        .map(|&k| match decode(t.columns[k].kind, r, k) {
                            Ok(v) => format!("{}={}", t.columns[k].name, v.display()),
                            Err(_) => format!("{}=?", t.columns[k].name),
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Error::BadRow {
                        table: t.name.clone(),
                        key,
                        reason: format!("column {:?} ({}): {reason}", c.name, c.source_type),
                    });
                }
            }
        }
        Ok(row)
    }

    /// Why a zero date in column `i` stops the row, and how to fix it.
    fn zero_date_reason(&self, i: usize) -> String {
        let fix = if self.keyed[i] {
            "a cursor or primary-key column cannot hold one (it could not be ordered or bound); fix the row on the source"
        } else {
            "set `zero_dates = \"null\"` in [source] to replicate such dates as NULL, or fix the row on the source"
        };
        format!("it holds a zero date (year, month or day 0), which PostgreSQL cannot store; {fix}")
    }
}

pub type Query<'q> = sqlx::query::Query<'q, MySql, MySqlArguments>;

/// One page of a `… LIMIT ?` query, bounded in bytes.
pub struct Page {
    pub rows: Vec<Row>,
    /// Full: the row limit was reached, or the bytes ran out before it.
    pub full: bool,
    /// The next page's row limit: what `page_bytes` holds of rows as wide as this page's
    /// widest, within `1..=page_rows` (`None` for an empty page).
    pub next_limit: Option<usize>,
}

/// Runs a page query whose last parameter is the row limit (bound here) and decodes its
/// rows as they arrive, while the server is still sending the page; once `page_bytes` of
/// rows are kept, the rest of the result is read past. The outer error is a row sluice
/// cannot decode; the inner one is the query's.
pub async fn read_page(
    q: Query<'_>,
    conn: &mut sqlx::MySqlConnection,
    spec: &ReadSpec,
    limit: usize,
    page_bytes: usize,
    page_rows: usize,
) -> Result<std::result::Result<Page, sqlx::Error>> {
    use futures::StreamExt;
    let q = q.bind(limit as u64);
    let mut rows = Vec::with_capacity(limit.min(16_384));
    let (mut bytes, mut widest, mut seen, mut cut) = (0usize, 0usize, 0usize, false);
    let mut stream = q.fetch(conn);
    while let Some(r) = stream.next().await {
        let r = match r {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        seen += 1;
        if cut {
            continue;
        }
        let row = spec.decode_row(&r)?;
        let b = crate::value::row_bytes(&row);
        bytes += b;
        widest = widest.max(b);
        rows.push(row);
        cut = bytes >= page_bytes;
    }
    Ok(Ok(Page {
        rows,
        full: cut || seen >= limit,
        next_limit: page_bytes
            .checked_div(widest)
            .map(|fit| fit.clamp(1, page_rows)),
    }))
}

/// Binds one value as the MySQL type that compares correctly with its column.
pub fn bind_value<'q>(q: Query<'q>, v: &Value) -> Query<'q> {
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

/// `CASE WHEN` condition that is true for a zero or partial date.
pub fn zero_date_condition(q: &str) -> String {
    format!("YEAR({q}) = 0 OR MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0")
}

/// Decodes column `i` of a result row as `kind` says; the error is the reason, for a
/// message that also names the table, key and column.
fn decode(kind: Kind, row: &MySqlRow, i: usize) -> std::result::Result<Value, String> {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    let r = match kind {
        Kind::Bool => match row.try_get::<Option<i64>, _>(i) {
            Ok(Some(v @ (0 | 1))) => Ok(Value::Bool(v == 1)),
            Ok(Some(v)) => {
                return Err(format!(
                    "TINYINT(1) holds {v}, which is neither 0 nor 1, so it is not a boolean; set `tinyint1_as_boolean = false` in the table's [[tables]] entry to replicate TINYINT(1) as smallint; sluice changes an existing target column to smallint at the next start"
                ))
            }
            Ok(None) => Ok(Value::Null),
            Err(e) => Err(e),
        },
        Kind::Int { .. } | Kind::Year => {
            row.try_get::<Option<i64>, _>(i).map(|v| opt(v, Value::Int))
        }
        Kind::UInt { .. } => row.try_get::<Option<u64>, _>(i).map(|v| opt(v, Value::UInt)),
        Kind::Float32 => row
            .try_get::<Option<f32>, _>(i)
            .map(|v| opt(v, |v| Value::Float(v as f64))),
        Kind::Float64 => row.try_get::<Option<f64>, _>(i).map(|v| opt(v, Value::Float)),
        Kind::Decimal { .. }
        | Kind::Text
        | Kind::Json
        | Kind::Enum
        | Kind::Set
        | Kind::Time { .. }
        | Kind::Bits(_) => row.try_get::<Option<String>, _>(i).map(|v| opt(v, Value::Text)),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i).map(|v| opt(v, Value::Bytes)),
        Kind::Date => row.try_get(i).map(|v| opt(v, Value::Date)),
        Kind::DateTime { .. } => row.try_get(i).map(|v| opt(v, Value::DateTime)),
        Kind::Timestamp { .. } => row.try_get(i).map(|v| opt(v, Value::Timestamp)),
    };
    r.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::mysql::introspect::SourceColumn;

    #[test]
    fn zero_dates_become_null_outside_strict_columns() {
        let col = |name: &str, kind| SourceColumn {
            name: name.into(),
            column_type: "x".into(),
            kind,
            nullable: false,
            default: None,
        };
        let t = SourceTable {
            name: "t".into(),
            columns: vec![
                col("at", Kind::DateTime { fsp: 6 }),
                col("d", Kind::Date),
                col(
                    "n",
                    Kind::Decimal {
                        precision: 5,
                        scale: 2,
                    },
                ),
            ],
            primary_key: vec![],
            indexes: vec![],
            excluded: vec![],
        };
        let s = ReadSpec::new(&t, vec![0], ZeroDates::Null, &[0]);
        assert!(!s.model.columns[0].may_be_null() && s.model.columns[1].may_be_null());
        assert!(!s.zero_date_to_null(0) && s.zero_date_to_null(1));
        assert_eq!(s.select_expr(0), "`at`");
        assert!(s.select_expr(1).starts_with("CASE WHEN YEAR(`d`) = 0"));
        assert_eq!(s.select_expr(2), "CAST(`n` AS CHAR)");
        assert!(s.select_list().ends_with("THEN 1 ELSE 0 END"));
        let s = ReadSpec::new(&t, vec![0], ZeroDates::Error, &[0]);
        assert!(!s.model.columns[1].may_be_null() && !s.zero_date_to_null(1));
    }
}
