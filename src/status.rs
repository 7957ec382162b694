//! `status` and `/status`: each table's stored state, read from the target, with its lag.
//!
//! **Lag** here is measured in cursor time from the databases alone, so it works from any
//! machine while `run` goes on elsewhere: the newest cursor value on the source
//! (`MAX(cursor)`) minus the cursor value of the watermark, or 0 when nothing is newer. It
//! is `null` when the cursor is not a DATETIME/TIMESTAMP, before the first batch, or when
//! the source cannot be reached (then `source_error` says why).

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::sqlx::{self, AssertSqlSafe, Row as _};
use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, Result, Side};
use crate::source::mysql;
use crate::source::schema::quote_mysql;
use crate::value::Value;

/// One table, as `status --json` and `/status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub rows_replicated: i64,
    /// Keyset column → value of the last row committed; `null` before the first batch.
    pub watermark: Option<serde_json::Map<String, serde_json::Value>>,
    pub last_commit: DateTime<Utc>,
    pub lag_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// The initial load is still running with the table's primary key deferred (it is
    /// built once the source is caught up).
    pub initial_load: bool,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub tables: Vec<TableStatus>,
    /// Set when the source could not be asked for its newest cursor values.
    pub source_error: Option<String>,
}

/// Reads `sluice.replication_state` and, for the lag, the newest cursor value per table.
pub async fn collect(settings: &Settings) -> Result<Status> {
    let mut pg = crate::sink::connect(&settings.target_url).await?;
    let rows = sqlx::query(
        "SELECT table_name, key_columns, position, rows_replicated, updated_at, last_error, \
                deferred_key IS NOT NULL \
         FROM sluice.replication_state ORDER BY table_name",
    )
    .fetch_all(&mut pg)
    .await
    .map_err(|e| {
        if e.to_string().contains("does not exist") {
            Error::Schema("the target has no sluice.replication_state table yet; run `sluice migrate` or `sluice run` first".into())
        } else {
            Error::db(Side::Target, "reading sluice.replication_state", &e)
        }
    })?;
    let mut my = match mysql::connect(&settings.source_url).await {
        Ok(c) => Ok(c),
        Err(e) => Err(e.to_string()),
    };
    let mut out = Status {
        tables: Vec::new(),
        source_error: my.as_ref().err().cloned(),
    };
    for r in rows {
        let get = |e: sqlx::Error| Error::db(Side::Target, "reading sluice.replication_state", &e);
        let table: String = r.try_get(0).map_err(get)?;
        let keys: serde_json::Value = r.try_get(1).map_err(get)?;
        let position: Option<serde_json::Value> = r.try_get(2).map_err(get)?;
        let names: Vec<String> = serde_json::from_value(keys).unwrap_or_default();
        let values: Option<Vec<Value>> = position.and_then(|p| serde_json::from_value(p).ok());
        let watermark = values.as_ref().map(|vs| {
            names
                .iter()
                .zip(vs)
                .map(|(n, v)| (n.clone(), json_of(v)))
                .collect()
        });
        let mut lag_seconds = None;
        if let (Ok(conn), Some(first), Some(name)) = (
            my.as_mut(),
            values.as_ref().and_then(|v| v.first()),
            names.first(),
        ) {
            if let Some(at) = first.as_utc() {
                let sql = format!(
                    "SELECT MAX({}) FROM {}",
                    quote_mysql(name),
                    quote_mysql(&table)
                );
                let q = sqlx::query(AssertSqlSafe(sql));
                let newest: Option<DateTime<Utc>> = match first {
                    Value::Timestamp(_) => q
                        .fetch_one(&mut *conn)
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<Option<DateTime<Utc>>, _>(0).ok().flatten()),
                    _ => q
                        .fetch_one(&mut *conn)
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<Option<NaiveDateTime>, _>(0).ok().flatten())
                        .map(|t| t.and_utc()),
                };
                lag_seconds = newest
                    .map(|n| ((n - at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0));
            }
        }
        out.tables.push(TableStatus {
            table,
            rows_replicated: r.try_get(3).map_err(get)?,
            watermark,
            last_commit: r.try_get(4).map_err(get)?,
            lag_seconds,
            last_error: r.try_get(5).map_err(get)?,
            initial_load: r.try_get(6).map_err(get)?,
        });
    }
    Ok(out)
}

fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Float(f) => (*f).into(),
        Value::Text(s) => s.clone().into(),
        other => other.display().into(),
    }
}

/// One line per table, for people.
pub fn describe(t: &TableStatus) -> String {
    let wm = match &t.watermark {
        None => "none yet".to_string(),
        Some(m) => format!(
            "({})",
            m.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{}: {} rows replicated{}, watermark {wm}, lag {}, last commit {}, last error {}",
        t.table,
        t.rows_replicated,
        if t.initial_load {
            " (initial load: primary key deferred until caught up)"
        } else {
            ""
        },
        t.lag_seconds
            .map_or("unknown".to_string(), |l| format!("{l:.3} s")),
        t.last_commit.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        t.last_error.as_deref().unwrap_or("none")
    )
}
