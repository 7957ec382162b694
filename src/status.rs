//! `status` and `/status`: each configured table's stored state, read from the target
//! (through the `replication_state` entity), with its lag.
//!
//! **Lag** here is measured in cursor time from the databases alone, so it works from any
//! machine while `run` goes on elsewhere: the newest cursor value on the source
//! (`MAX(cursor)`) minus the cursor value of the position, or 0 when nothing is newer. It
//! is `null` when the cursor is not a DATETIME/TIMESTAMP, before the first batch, or when
//! the source cannot be reached (then `source_error` says why).

use chrono::{DateTime, NaiveDateTime, Utc};
use entities::replication_state as rs;
use sea_orm::sqlx::{self, AssertSqlSafe, Row as _};
use sea_orm::FromQueryResult;
use serde::Serialize;

use crate::config::Settings;
use crate::conn::Helpers;
use crate::error::{Error, Result, Side};
use crate::source::capture::{Mode, SourcePosition};
use crate::source::mysql;
use crate::value::Value;

/// One table, as `status --json` and `/status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub rows_replicated: i64,
    /// Keyset column → value of the last row committed (polling); `null` before the first
    /// batch.
    pub watermark: Option<serde_json::Map<String, serde_json::Value>>,
    /// The position as the source wrote it; `null` before the first batch.
    pub position: Option<serde_json::Value>,
    /// When the last batch committed; `null` before the first.
    pub last_commit: Option<DateTime<Utc>>,
    pub lag_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// The initial load is still running with the table's primary key deferred (it is
    /// built once the source is caught up).
    pub initial_load: bool,
    /// The process that owns the table (`host:pid`) and its ownership epoch.
    pub owner: Option<String>,
    pub owner_epoch: i64,
    /// Binlog capture: bytes of binary log the source holds past the position.
    pub bytes_behind: Option<u64>,
    /// Binlog capture: `"running"` while the table's snapshot is being copied (the binlog
    /// follows from the position it is consistent with), `"done"` once it is; `null` when
    /// polling.
    pub snapshot: Option<&'static str>,
    /// Binlog capture, while the table is being copied: how far the copy got.
    pub copy: Option<CopyStatus>,
    /// Polling: how far the newest cursor value is ahead of the source's clock, when it is
    /// by more than 5 s: such rows wait until the clock reaches them (a DATETIME cursor
    /// written in another zone than the server's: see `[source] datetime_zone`).
    pub cursor_ahead_seconds: Option<i64>,
    /// Polling with a time cursor: rows whose cursor value is ahead of the source's clock.
    pub rows_future_cursor: Option<u64>,
    /// The shape version the target table is in (`sluice.schema_history`): 1 as first
    /// replicated, one more for each schema change followed.
    pub shape_version: Option<u32>,
    /// The table's mapping (`[[tables]] target`, `exclude_columns`, `rename_columns`,
    /// `mask_columns`), as people read it; `null` without one.
    pub mapping: Option<String>,
    /// The last background comparison of source and target (`[verify] interval_s`); `null`
    /// before the first.
    pub verify: Option<crate::verify::TableReport>,
    /// The position read back, for [`describe`].
    #[serde(skip)]
    read: Option<SourcePosition>,
}

/// A table's copy in progress (binlog capture), as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CopyStatus {
    /// Copied beside the stream (the table's changes applied as the copy goes), or before
    /// it (a new pipeline's first copy: the changes follow once every table is copied).
    pub beside: bool,
    pub rows_copied: u64,
    /// Chunks applied (pages, for a copy before the stream).
    pub chunks: u64,
    /// The source's row count: exact under 100,000 rows, InnoDB's estimate above.
    pub rows_estimated: Option<u64>,
    /// `rows_copied` of `rows_estimated`, at most 100.
    pub percent: Option<f64>,
    /// The rest of the estimate at the rate so far.
    pub eta_seconds: Option<f64>,
    pub started_at: Option<DateTime<Utc>>,
}

impl CopyStatus {
    fn of(p: &crate::source::binlog::SnapshotProgress, estimated: Option<u64>) -> CopyStatus {
        let estimated = estimated.map(|e| e.max(p.rows));
        let elapsed = p
            .started_at
            .map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1e3)
            .filter(|s| *s > 0.0);
        let eta_seconds = match (estimated, elapsed) {
            (Some(e), Some(s)) if p.rows > 0 => Some((e - p.rows) as f64 * s / p.rows as f64),
            _ => None,
        };
        CopyStatus {
            beside: p.beside,
            rows_copied: p.rows,
            chunks: p.chunks,
            rows_estimated: estimated,
            percent: estimated
                .filter(|e| *e > 0)
                .map(|e| (p.rows as f64 * 100.0 / e as f64).min(100.0)),
            eta_seconds,
            started_at: p.started_at,
        }
    }

    /// `1200000 of about 2000000 rows (60%) in 40 chunks, about 25 s left`.
    pub fn describe(&self) -> String {
        let of = match (self.rows_estimated, self.percent) {
            (Some(e), Some(p)) => format!(" of about {e} rows ({p:.0}%)"),
            _ => " rows".to_string(),
        };
        let left = self
            .eta_seconds
            .map_or(String::new(), |s| format!(", about {s:.0} s left"));
        format!(
            "{} copied{of} in {} chunk(s){left}",
            self.rows_copied, self.chunks
        )
    }
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `[pipeline] name` (by default `<source database>/<target schema>`).
    pub pipeline: String,
    pub tables: Vec<TableStatus>,
    /// Set when the source could not be asked for its newest cursor values.
    pub source_error: Option<String>,
    /// The `run` processes sharing the pipeline's tables (`sluice.members`), live ones first;
    /// each table's `owner` names the member that holds it.
    pub members: Vec<crate::state::members::Member>,
}

/// Reads the configured tables' rows of `sluice.replication_state` and, for the lag, the
/// newest cursor value per table.
/// `helpers`: the connections to use (the process's helper connections under `run`).
pub async fn collect(settings: &Settings, helpers: &mut Helpers) -> Result<Status> {
    let (my, pg) = helpers
        .both(&settings.source.url, &settings.target.url)
        .await;
    let pg = pg?;
    // The entity's columns, read through the helper connection.
    let rows: Vec<rs::Model> = sqlx::query(
        "SELECT * FROM sluice.replication_state WHERE pipeline = $1 ORDER BY table_name",
    )
    .bind(settings.pipeline_name.as_str())
    .fetch_all(&mut *pg)
    .await
    .map_err(|e| {
        let timed_out = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "57014");
        let mut err = Error::db(Side::Target, "reading sluice.replication_state", &e);
        if let (true, Error::Database { message, .. }) = (timed_out, &mut err) {
            message.push_str(&format!(
                "; the read waited more than {} s, most likely for a lock another session holds on the table (see pg_locks and pg_stat_activity on the target); replication waits for it too",
                crate::conn::HELPER_STATEMENT_TIMEOUT_S
            ));
        }
        err
    })
    .and_then(|rows| {
        rows.into_iter()
            .map(|r| {
                // A column missing: an older sluice's state table (see below).
                rs::Model::from_query_result(&sea_orm::QueryResult::from(r), "").map_err(|e| {
                    Error::Database {
                        side: Side::Target,
                        context: "reading sluice.replication_state".into(),
                        message: e.to_string(),
                        code: Some("42703".into()),
                        transient: false,
                    }
                })
            })
            .collect()
    })
        .map_err(|e| {
            match e.sqlstate() {
                Some(crate::error::PG_UNDEFINED_TABLE) | Some(crate::error::PG_UNDEFINED_SCHEMA) => Error::Schema(
                    "the target has no sluice.replication_state table yet; run `sluice migrate` or `sluice run` first".into(),
                ),
                // An older sluice's state table: `migrate` or `run` brings it up to date.
                Some("42703") => Error::Schema(
                    "the target's sluice.replication_state was made by an older sluice; run `sluice migrate` (or `sluice run`) to bring it up to date".into(),
                ),
                _ => e,
            }
        })?;
    // Shape versions; none before sluice recorded any (an older state schema).
    let versions: Vec<(String, i32)> = sqlx::query_as(
        "SELECT table_name, max(version) FROM sluice.schema_history WHERE pipeline = $1 GROUP BY table_name",
    )
    .bind(settings.pipeline_name.as_str())
    .fetch_all(&mut *pg)
    .await
    .unwrap_or_default();
    let mut my = my.map_err(|e| e.to_string());
    let mode = Mode::of(settings);
    let head = match my.as_mut() {
        Ok(conn) => mode.files(conn).await.ok().flatten(),
        Err(_) => None,
    };
    // Members; none before sluice recorded any (an older state schema).
    let members = crate::state::members::list(
        pg,
        &settings.pipeline_name,
        settings.cluster.member_timeout_ms,
    )
    .await
    .unwrap_or_default();
    let mut out = Status {
        pipeline: settings.pipeline_name.clone(),
        tables: Vec::new(),
        source_error: my.as_ref().err().cloned(),
        members,
    };
    // The zone DATETIME cursors are compared in (polling).
    let zone = match my.as_mut() {
        Ok(conn) if !mode.is_binlog() => {
            mysql::resolve_zone(conn, settings.source.datetime_zone.as_deref())
                .await
                .ok()
        }
        _ => None,
    };
    // In the configuration's order (a pattern's tables by name, where it stands).
    let mut names: Vec<String> = Vec::new();
    for t in &settings.tables {
        for r in rows.iter().filter(|r| t.takes(&r.table_name)) {
            if !names.contains(&r.table_name) {
                names.push(r.table_name.clone());
            }
        }
    }
    for name in names {
        let Some(r) = rows.iter().find(|r| r.table_name == name) else {
            continue;
        };
        let position = r.position.clone().filter(|p| !p.is_null());
        let read = position.as_ref().and_then(SourcePosition::from_json);
        let keyset = read
            .as_ref()
            .map(|p| p.keyset().to_vec())
            .unwrap_or_default();
        let mut lag_seconds = None;
        let binlog = read
            .as_ref()
            .filter(|p| matches!(p, SourcePosition::Binlog(_)));
        let bytes_behind = binlog
            .zip(head.as_ref())
            .and_then(|(p, head)| p.bytes_behind(head));
        if let Some(behind) = bytes_behind {
            lag_seconds = if behind == 0 {
                Some(0.0)
            } else {
                r.source_time.map(|t| {
                    ((Utc::now() - t.with_timezone(&Utc))
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6)
                        .max(0.0)
                })
            };
        }
        if let (Ok(conn), Some((col, first))) = (my.as_mut(), keyset.first()) {
            if let Some(at) = first.as_utc() {
                let sql = format!(
                    "SELECT MAX({}) FROM {}",
                    mysql::quote(col),
                    mysql::quote(&r.table_name)
                );
                let q = sqlx::query(AssertSqlSafe(sql));
                let newest: Option<DateTime<Utc>> = match first {
                    Value::Timestamp(_) => q
                        .fetch_one(&mut **conn)
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<Option<DateTime<Utc>>, _>(0).ok().flatten()),
                    _ => q
                        .fetch_one(&mut **conn)
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<Option<NaiveDateTime>, _>(0).ok().flatten())
                        .map(|t| t.and_utc()),
                };
                lag_seconds = newest
                    .map(|n| ((n - at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0));
            }
        }
        let copy = match (binlog, my.as_mut()) {
            (Some(SourcePosition::Binlog(b)), conn) => match &b.snapshot {
                Some(p) => {
                    let estimated = match conn {
                        Ok(conn) => mysql::rows_for_progress(conn, &r.table_name).await,
                        Err(_) => None,
                    };
                    Some(CopyStatus::of(p, estimated))
                }
                None => None,
            },
            _ => None,
        };
        let mut cursor_ahead_seconds = None;
        let mut rows_future_cursor = None;
        let cursor = settings
            .tables
            .iter()
            .find(|t| t.takes(&r.table_name))
            .and_then(|t| t.cursor.as_ref())
            .and_then(|c| c.to_vec().into_iter().next());
        if let (Ok(conn), Some(zone), Some(col)) = (my.as_mut(), zone.as_ref(), cursor) {
            let kind: Option<String> = sqlx::query_scalar(
                "SELECT CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            )
            .bind(&r.table_name)
            .bind(&col)
            .fetch_optional(&mut **conn)
            .await
            .ok()
            .flatten();
            if let Some(kind) = kind.filter(|k| k == "datetime" || k == "timestamp") {
                if let Ok(a) =
                    mysql::cursor_ahead(conn, &r.table_name, &col, kind == "datetime", zone).await
                {
                    rows_future_cursor = Some(a.rows);
                    cursor_ahead_seconds = Some(a.newest_s).filter(|&s| s > 5);
                }
            }
        }
        out.tables.push(TableStatus {
            table: r.table_name.clone(),
            rows_replicated: r.rows_replicated,
            watermark: position.as_ref().filter(|_| binlog.is_none()).map(|_| {
                keyset
                    .iter()
                    .map(|(k, v)| (k.clone(), json_of(v)))
                    .collect()
            }),
            last_commit: position.as_ref().map(|_| r.updated_at.with_timezone(&Utc)),
            position,
            lag_seconds,
            last_error: r.last_error.clone(),
            initial_load: r.deferred_key.is_some(),
            owner: r.owner.clone(),
            owner_epoch: r.owner_epoch,
            bytes_behind,
            cursor_ahead_seconds,
            rows_future_cursor,
            shape_version: versions
                .iter()
                .find(|(n, _)| *n == r.table_name)
                .map(|(_, v)| *v as u32),
            mapping: settings
                .tables
                .iter()
                .find(|t| t.takes(&r.table_name))
                .and_then(|t| {
                    crate::sink::postgres::map::TableMap::describe(t, &settings.target.schema)
                }),
            verify: r
                .verify
                .clone()
                .and_then(|v| serde_json::from_value(v).ok()),
            snapshot: binlog.map(|p| if p.loading() { "running" } else { "done" }),
            copy,
            read,
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
/// A member as people read it.
pub fn describe_member(m: &crate::state::members::Member) -> String {
    let ago = (Utc::now() - m.heartbeat_at).num_milliseconds() as f64 / 1e3;
    format!(
        "member {}: {}, {} table(s){}, heartbeat {ago:.1} s ago",
        m.member,
        if m.live { "live" } else { "gone" },
        m.tables.len(),
        if m.tables.is_empty() {
            " (standing by)".to_string()
        } else {
            format!(" ({})", m.tables.join(", "))
        }
    )
}

impl TableStatus {
    /// The position or watermark as people read it (`status` prints it); `None` before the
    /// first batch.
    pub fn position_text(&self) -> Option<String> {
        match (&self.position, &self.read) {
            (None, _) => None,
            (Some(_), Some(read)) => Some(read.describe()),
            (Some(p), None) => Some(p.to_string()),
        }
    }
}

pub fn describe(t: &TableStatus) -> String {
    let wm = t.position_text().unwrap_or_else(|| "none yet".to_string());
    let mut behind = t
        .bytes_behind
        .map_or(String::new(), |b| format!(" ({b} bytes of binlog behind)"));
    if let Some(c) = &t.copy {
        behind.push_str(&format!(": {}", c.describe()));
    }
    if let Some(s) = t.cursor_ahead_seconds {
        behind.push_str(&format!(
            " ({} rows, the newest {s} s, ahead of the source's clock: they wait for it; if the application writes another time zone, set [source] datetime_zone)",
            t.rows_future_cursor.unwrap_or(0)
        ));
    }
    // The shape version, once the table has changed shape at least once.
    let shape = t
        .shape_version
        .filter(|v| *v > 1)
        .map_or(String::new(), |v| format!(", shape version {v}"));
    format!(
        "{}: {} rows replicated{}{shape}, {} {wm}{behind}, lag {}, last commit {}, last error {}{}{}",
        t.table,
        t.rows_replicated,
        if t.initial_load {
            " (initial load: primary key deferred until caught up)"
        } else {
            ""
        },
        if t.position.is_some() && t.read.as_ref().is_none_or(|r| r.keyset().is_empty()) {
            "position"
        } else {
            "watermark"
        },
        t.lag_seconds
            .map_or("unknown".to_string(), |l| format!("{l:.3} s")),
        t.last_commit.map_or("none yet".to_string(), |c| c
            .format("%Y-%m-%d %H:%M:%S%.3f UTC")
            .to_string()),
        t.last_error.as_deref().unwrap_or("none"),
        t.owner
            .as_ref()
            .map_or(String::new(), |o| format!(", owner {o}")),
        t.verify.as_ref().map_or(String::new(), |r| format!(
            "\n  last verify: {}",
            crate::verify::check::summary(r)
        )) + &t
            .mapping
            .as_ref()
            .map_or(String::new(), |m| format!("\n  mapping: {m}"))
    )
}
