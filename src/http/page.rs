//! The status page: `GET /` serves one self-contained page (HTML, a script and a style
//! sheet, compiled into the binary: no CDN, nothing fetched but `/status`), which reads
//! `/status` every two seconds and shows every table at a glance.
//!
//! `/status` served here carries, beside what `sluice status --json` prints, what this
//! process knows live ([`live`]): each table's state and its lag over the last minutes
//! (sampled by [`sample_lag`]), and the process (version, uptime, capture mode, memory).
//! The page only reads; it has no form and no request that changes anything.

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Capture, Settings};
use crate::redact::redact;
use crate::status::Status;
use crate::telemetry::{self, history, TableMetrics};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
const ICON: &str = include_str!("icon.svg");
pub const SCRIPT_PATH: &str = "/page.js";
pub const STYLE_PATH: &str = "/page.css";
/// Browsers ask for `/favicon.ico` unless told.
pub const ICON_PATH: &str = "/favicon.svg";

/// The page loads its own script and style sheet only, and talks to its own origin only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", POLICY))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn icon() -> HttpResponse {
    asset("image/svg+xml", ICON)
}

/// When the HTTP server started: the process's uptime, near enough.
static STARTED: LazyLock<(Instant, DateTime<Utc>)> = LazyLock::new(|| (Instant::now(), Utc::now()));

/// Samples every table's lag for the page's chart, every [`history::STEP`], while the
/// server runs.
pub async fn sample_lag() {
    LazyLock::force(&STARTED);
    let mut tick = tokio::time::interval(history::STEP);
    loop {
        tick.tick().await;
        history::sample(Utc::now());
    }
}

/// The process, as the page's header shows it.
#[derive(Debug, Serialize)]
pub struct Process {
    pub version: &'static str,
    pub pid: u32,
    /// `host:pid`, as tables' `owner` names it.
    pub member: String,
    /// `"active"`, or `"standby"` while the pipeline's other members hold every table.
    pub role: &'static str,
    pub capture: &'static str,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    /// Resident memory now and at its peak (`/proc/self/status`); `null` off Linux.
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    /// The databases, with any password masked.
    pub source: String,
    pub target: String,
}

/// `VmRSS` and `VmHWM` of `/proc/self/status`, in bytes.
fn memory() -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn process(settings: &Settings) -> Process {
    let (memory_bytes, memory_peak_bytes) = memory();
    Process {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        member: crate::state::ownership::owner_id(),
        role: if telemetry::standby() && telemetry::snapshot().is_empty() {
            "standby"
        } else {
            "active"
        },
        capture: match settings.source.capture {
            Capture::Poll => "poll",
            Capture::Binlog => "binlog",
        },
        started_at: STARTED.1,
        uptime_seconds: STARTED.0.elapsed().as_secs(),
        memory_bytes,
        memory_peak_bytes,
        source: redact(&settings.source.url),
        target: redact(&settings.target.url),
    }
}

/// What this process knows live of one table it runs.
#[derive(Debug, Serialize)]
pub struct Live {
    /// `"snapshotting"` (copied from the source: a first load, or a copy beside the
    /// stream), `"caught up"` (nothing left to read), `"streaming"` (changes flowing, the
    /// newest applied within [`KEEPING_UP_S`] of its source time), `"catching up"` (further
    /// behind), `"stopped"` (an error stopped it: `error` says which and how to go on),
    /// `"finished"` (its stages ended: shutdown, or `run --once` done).
    pub state: &'static str,
    /// See [`TableMetrics::delay_seconds`].
    pub lag_seconds: Option<f64>,
    pub lag_history: history::LagHistory,
    /// Rows read and written since the process started.
    pub rows_read: u64,
    pub rows_written: u64,
    /// The error that stopped the table.
    pub error: Option<String>,
    /// The last error retried since the last commit.
    pub retrying: Option<String>,
}

/// A table whose newest change applied came within this many seconds of its source time
/// is keeping up (`"streaming"`); further behind, it is `"catching up"`.
pub const KEEPING_UP_S: f64 = 5.0;

fn live_of(m: &TableMetrics, copying: bool, table: &str, now: DateTime<Utc>) -> Live {
    let state = if m.failed.is_some() {
        "stopped"
    } else if !m.running {
        "finished"
    } else if copying {
        "snapshotting"
    } else if m.caught_up && m.lag_seconds(now) == Some(0.0) {
        "caught up"
    } else if m.delay_seconds(now).is_some_and(|d| d <= KEEPING_UP_S) {
        "streaming"
    } else {
        "catching up"
    };
    Live {
        state,
        lag_seconds: m.delay_seconds(now),
        lag_history: history::lag_history(table),
        rows_read: m.rows_read,
        rows_written: m.rows_written,
        error: m.failed.as_ref().map(|e| e.to_string()),
        retrying: m.last_error.clone().filter(|_| m.failed.is_none()),
    }
}

/// `/status` when the target cannot be read: the error, the process, and the tables this
/// process runs as it knows them live (`{"table": …, "live": …}`), their stored state
/// unknown.
pub fn unreadable(settings: &Settings, error: &crate::error::Error) -> serde_json::Value {
    let now = Utc::now();
    let tables: Vec<serde_json::Value> = telemetry::snapshot()
        .iter()
        .map(|(t, m)| {
            serde_json::json!({
                "table": t,
                "live": live_of(m, false, t, now),
            })
        })
        .collect();
    serde_json::json!({
        "error": error.to_string(),
        "process": process(settings),
        "tables": tables,
    })
}

/// `/status` as served here: `status` and, on each table this process runs, `"live"`
/// ([`Live`]); `"process"` ([`Process`]).
pub fn live(settings: &Settings, status: Status) -> serde_json::Value {
    let now = Utc::now();
    let tables = telemetry::snapshot();
    let mut value = serde_json::to_value(&status).unwrap_or_default();
    if let Some(list) = value.get_mut("tables").and_then(|t| t.as_array_mut()) {
        for (entry, t) in list.iter_mut().zip(&status.tables) {
            let Some(obj) = entry.as_object_mut() else {
                continue;
            };
            // As `sluice status` words them.
            obj.insert("position_text".into(), t.position_text().into());
            obj.insert(
                "verify_text".into(),
                t.verify.as_ref().map(crate::verify::check::summary).into(),
            );
            if let Some(m) = tables.get(&t.table) {
                let copying = t.copy.is_some() || t.initial_load || t.snapshot == Some("running");
                obj.insert(
                    "live".into(),
                    serde_json::to_value(live_of(m, copying, &t.table, now)).unwrap_or_default(),
                );
            }
        }
    }
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "process".into(),
            serde_json::to_value(process(settings)).unwrap_or_default(),
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::Error;

    #[test]
    fn a_tables_state_reads_its_metrics() {
        let now = Utc::now();
        let m = TableMetrics {
            running: true,
            ..TableMetrics::default()
        };
        assert_eq!(live_of(&m, true, "t", now).state, "snapshotting");
        assert_eq!(live_of(&m, false, "t", now).state, "catching up");
        let flowing = TableMetrics {
            newest: Some(now - chrono::Duration::seconds(1)),
            last_commit: Some(now),
            ..m.clone()
        };
        assert_eq!(live_of(&flowing, false, "t", now).state, "streaming");
        let behind = TableMetrics {
            newest: Some(now - chrono::Duration::seconds(60)),
            ..flowing
        };
        assert_eq!(live_of(&behind, false, "t", now).state, "catching up");
        let caught_up = TableMetrics {
            caught_up: true,
            ..m.clone()
        };
        assert_eq!(live_of(&caught_up, false, "t", now).state, "caught up");
        let failed = TableMetrics {
            failed: Some(Arc::new(Error::Schema("changed; do this".into()))),
            running: false,
            last_error: Some("changed; do this".into()),
            ..m.clone()
        };
        let l = live_of(&failed, true, "t", now);
        assert_eq!(l.state, "stopped");
        assert!(l.error.unwrap().contains("do this"));
        assert_eq!(l.retrying, None);
        let done = TableMetrics {
            running: false,
            ..m
        };
        assert_eq!(live_of(&done, false, "t", now).state, "finished");
    }

    #[test]
    fn memory_is_read_on_linux() {
        let (now, peak) = memory();
        assert!(now.unwrap() > 0 && peak.unwrap() >= now.unwrap());
    }
}
