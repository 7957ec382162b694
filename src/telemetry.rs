//! Metrics: every name in one place ([`names`]), a small in-process registry fed by the
//! pipeline, and its rendering in the Prometheus text format (served at `/metrics` by
//! the HTTP surface).
//!
//! The registry is process-wide: each table has one [`TableHandle`], which its stages
//! update directly as they work; metrics, `/readyz`, progress and the run's summary read it.
//! Labels are low-cardinality: `table`, and `stage` on retries.
//!
//! **Replication lag** (`sluice_replication_lag_seconds{table}`), at scrape time: 0 when the
//! poller's last read found nothing more to read and every row read has been committed (as a
//! written row or a dead letter);
//! otherwise now minus the cursor time of the newest row committed (the first cursor
//! column, when it is a DATETIME or TIMESTAMP read as UTC). Absent for tables with a
//! non-time cursor, and before the first commit while still catching up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;

/// Metric names: `sluice_<thing>_<unit>`, `_total` for counters.
pub mod names {
    pub const ROWS_READ: &str = "sluice_rows_read_total";
    pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
    pub const BATCHES: &str = "sluice_batches_total";
    pub const MERGED_BATCHES: &str = "sluice_merged_batches_total";
    pub const RETRIES: &str = "sluice_retries_total";
    pub const BAD_ROWS: &str = "sluice_bad_rows_total";
    pub const FAILURES: &str = "sluice_table_failures_total";
    pub const BATCH_ROWS: &str = "sluice_batch_rows";
    pub const WRITE_SECONDS: &str = "sluice_write_duration_seconds";
    pub const CHANNEL_ROWS: &str = "sluice_channel_rows";
    pub const CHANNEL_BATCHES: &str = "sluice_channel_batches";
    pub const WATERMARK_AGE: &str = "sluice_watermark_age_seconds";
    pub const LAG: &str = "sluice_replication_lag_seconds";
    pub const TABLE_RUNNING: &str = "sluice_table_running";
    pub const CHANGES: &str = "sluice_changes_total";
    pub const TRANSACTIONS: &str = "sluice_source_transactions_total";
    pub const EVENTS_SKIPPED: &str = "sluice_binlog_events_skipped_total";
    pub const BYTES_BEHIND: &str = "sluice_binlog_bytes_behind";
    pub const DDL_LOCK_WAITS: &str = "sluice_ddl_lock_waits_total";
    pub const ROWS_FUTURE: &str = "sluice_rows_future_cursor";
    pub const MEMBER_TABLES: &str = "sluice_member_tables";
    pub const VERIFY_CHECKS: &str = "sluice_verify_checks_total";
    pub const VERIFY_ROWS_COMPARED: &str = "sluice_verify_rows_compared_total";
    pub const VERIFY_ROWS_REPAIRED: &str = "sluice_verify_rows_repaired_total";
    pub const VERIFY_ROWS_DIFFERING: &str = "sluice_verify_rows_differing";
    pub const VERIFY_LAST_CHECK: &str = "sluice_verify_last_check_timestamp_seconds";
}

/// Changes applied, by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
    pub upsert: u64,
    pub truncate: u64,
}

impl OpCounts {
    pub fn of(changes: &[crate::model::Change]) -> Self {
        use crate::model::Op;
        let mut c = OpCounts::default();
        for ch in changes {
            match ch.op {
                Op::Insert => c.insert += 1,
                Op::Update => c.update += 1,
                Op::Delete => c.delete += 1,
                Op::Upsert => c.upsert += 1,
                Op::Truncate => c.truncate += 1,
            }
        }
        c
    }

    fn add(&mut self, o: OpCounts) {
        self.insert += o.insert;
        self.update += o.update;
        self.delete += o.delete;
        self.upsert += o.upsert;
        self.truncate += o.truncate;
    }

    fn pairs(&self) -> [(&'static str, u64); 5] {
        [
            ("insert", self.insert),
            ("update", self.update),
            ("delete", self.delete),
            ("upsert", self.upsert),
            ("truncate", self.truncate),
        ]
    }
}

/// Source transactions applied (binlog capture).
static TRANSACTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `n` whole source transactions were committed on the target.
pub fn transactions_applied(n: u64) {
    TRANSACTIONS.fetch_add(n, Ordering::Relaxed);
}

/// Binlog events skipped (binlog capture), by type name.
static EVENTS_SKIPPED: LazyLock<Mutex<BTreeMap<String, u64>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// A binlog event of type `kind` was skipped. True for the first of its type.
pub fn binlog_event_skipped(kind: &str) -> bool {
    let mut skipped = EVENTS_SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    let n = skipped.entry(kind.to_string()).or_insert(0);
    *n += 1;
    *n == 1
}

const BATCH_ROWS_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1000.0, 10_000.0, 50_000.0, 100_000.0];
const WRITE_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// What `verify` (or its background check) found and did for one table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TableReport {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub chunks: usize,
    pub mismatched_chunks: usize,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub missing_keys: Vec<String>,
    pub extra_keys: Vec<String>,
    pub different_keys: Vec<String>,
    /// Columns left out of the comparison (see the module doc).
    pub skipped_columns: Vec<String>,
    pub upserted: u64,
    pub deleted: u64,
    /// After a repair: whether the table compared equal again.
    pub equal_after_repair: Option<bool>,
    pub seconds: f64,
    /// Background check: when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Background check: rows that differed at first look and turned out to be changes
    /// still on their way (past the committed position), or equal on a second look.
    pub in_flight: u64,
    /// Background check: rows that kept changing on the source while being looked at, or
    /// whose changes the pipeline had not applied within the wait; looked at next time.
    pub unsettled: u64,
    /// Rows read on each side, lookups included (what `[verify] max_rows_per_s` bounds).
    pub read_source: u64,
    pub read_target: u64,
}

impl TableReport {
    pub fn mismatches(&self) -> u64 {
        self.missing + self.extra + self.different
    }

    /// Whether the table is (now) equal on both sides.
    pub fn ok(&self) -> bool {
        self.mismatches() == 0 || self.equal_after_repair == Some(true)
    }
}

/// What the process knows about one table.
#[derive(Debug, Clone)]
pub struct TableMetrics {
    pub rows_read: u64,
    pub rows_written: u64,
    pub batches: u64,
    pub merged_batches: u64,
    pub retries: BTreeMap<&'static str, u64>,
    /// Rows refused because a value cannot be carried: dead letters, and a row that
    /// stopped the table.
    pub bad_rows: u64,
    /// Rows written to `sluice.dead_letters` (committed like written rows, but not written).
    pub dead_lettered: u64,
    pub failures: u64,
    pub batch_rows: Histogram,
    pub write_seconds: Histogram,
    /// Rows read and not yet taken into a batch.
    pub channel_rows: i64,
    /// Batches waiting for the writer.
    pub channel_batches: i64,
    /// The last read found nothing more.
    pub caught_up: bool,
    /// Source time of the newest change committed (for polling: the cursor time).
    pub newest: Option<DateTime<Utc>>,
    pub last_commit: Option<DateTime<Utc>>,
    pub running: bool,
    /// The error that stopped the table, when one did.
    pub failed: Option<Arc<Error>>,
    /// The last error seen (retried or not); cleared by the next commit.
    pub last_error: Option<String>,
    /// Changes committed, by operation.
    pub ops: OpCounts,
    /// The position of the last commit.
    pub position: Option<crate::model::Position>,
    /// Binlog capture: bytes of binlog between the position and the server's end.
    pub bytes_behind: Option<u64>,
    /// DDL attempts whose lock was not granted within `[target] lock_timeout_ms`.
    pub ddl_lock_waits: u64,
    /// Polling, time cursors: rows whose cursor value is ahead of the source's clock, as
    /// last counted (every minute while caught up).
    pub rows_future: Option<u64>,
    /// The background verify's last report (`[verify] interval_s`).
    pub verify: Option<TableReport>,
    /// Background checks made, rows they compared and rows they repaired, all time.
    pub verify_checks: u64,
    pub verify_rows_compared: u64,
    pub verify_rows_repaired: u64,
}

impl Default for TableMetrics {
    fn default() -> Self {
        TableMetrics {
            rows_read: 0,
            rows_written: 0,
            batches: 0,
            merged_batches: 0,
            retries: BTreeMap::new(),
            bad_rows: 0,
            ddl_lock_waits: 0,
            rows_future: None,
            verify: None,
            verify_checks: 0,
            verify_rows_compared: 0,
            verify_rows_repaired: 0,
            dead_lettered: 0,
            failures: 0,
            batch_rows: Histogram::new(BATCH_ROWS_BUCKETS),
            write_seconds: Histogram::new(WRITE_SECONDS_BUCKETS),
            channel_rows: 0,
            channel_batches: 0,
            caught_up: false,
            newest: None,
            last_commit: None,
            running: false,
            failed: None,
            last_error: None,
            ops: OpCounts::default(),
            position: None,
            bytes_behind: None,
        }
    }
}

impl TableMetrics {
    /// See the module doc.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        if self.caught_up && self.rows_read == self.rows_written + self.dead_lettered {
            return Some(0.0);
        }
        self.newest
            .map(|n| ((now - n).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0))
    }
}

/// What one committed batch did to a table.
#[derive(Debug, Clone)]
pub struct Commit {
    pub rows: usize,
    pub merged: bool,
    pub dead_lettered: usize,
    /// Source time of the batch's newest change.
    pub newest: Option<DateTime<Utc>>,
    pub committed_at: DateTime<Utc>,
    /// The successful attempt's write and commit time (retries excluded).
    pub took: Duration,
    pub ops: OpCounts,
    /// The table's position after the commit.
    pub position: Option<crate::model::Position>,
}

/// One table's live state: the one store that metrics, `/readyz`, progress, the demo and
/// the run's summary read, and the flag that stops its stages.
#[derive(Debug)]
pub struct TableHandle {
    pub name: String,
    /// Set when the table stops for good: readers stop reading it, writers drop its
    /// batches.
    stopped: AtomicBool,
    metrics: Mutex<TableMetrics>,
}

impl TableHandle {
    fn update<R>(&self, f: impl FnOnce(&mut TableMetrics) -> R) -> R {
        f(&mut self.metrics.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn snapshot(&self) -> TableMetrics {
        self.update(|m| m.clone())
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The reader handed `n` rows on; `caught_up`: the read found nothing more.
    pub fn rows_read(&self, n: usize, caught_up: bool) {
        self.update(|m| {
            m.rows_read += n as u64;
            m.channel_rows += n as i64;
            m.caught_up = caught_up;
        });
    }

    /// The batcher took `rows` rows into a batch.
    pub fn rows_batched(&self, rows: usize) {
        self.update(|m| m.channel_rows -= rows as i64);
    }

    /// A batch was queued for the writer (`1`) or taken by it (`-1`).
    pub fn batch_queued(&self, delta: i64) {
        self.update(|m| m.channel_batches += delta);
    }

    pub fn committed(&self, c: Commit) {
        self.update(|m| {
            m.rows_written += c.rows as u64;
            m.dead_lettered += c.dead_lettered as u64;
            m.bad_rows += c.dead_lettered as u64;
            m.batches += 1;
            m.merged_batches += u64::from(c.merged);
            m.batch_rows.observe((c.rows + c.dead_lettered) as f64);
            m.write_seconds.observe(c.took.as_secs_f64());
            if c.newest.is_some() {
                m.newest = c.newest;
            }
            m.last_commit = Some(c.committed_at);
            m.last_error = None;
            m.ops.add(c.ops);
            if c.position.is_some() {
                m.position = c.position;
            }
        });
    }

    /// Binlog capture: how far the committed position is from the server's end.
    pub fn set_bytes_behind(&self, bytes: u64) {
        self.update(|m| m.bytes_behind = Some(bytes));
    }

    /// The position of the last commit.
    pub fn position(&self) -> Option<crate::model::Position> {
        self.update(|m| m.position.clone())
    }

    /// Rows whose time cursor is ahead of the source's clock.
    pub fn set_rows_future(&self, rows: u64) {
        self.update(|m| m.rows_future = Some(rows));
    }

    /// Whether the last read found nothing more to read (no backlog).
    pub fn caught_up(&self) -> bool {
        self.update(|m| m.caught_up)
    }

    /// The background verify compared the table.
    pub fn verified(&self, report: TableReport) {
        self.update(|m| {
            m.verify_checks += 1;
            m.verify_rows_compared += report.source_rows;
            m.verify_rows_repaired += report.upserted + report.deleted;
            m.verify = Some(report);
        });
    }

    /// A DDL statement's lock was not granted in time (it is retried).
    pub fn ddl_lock_wait(&self) {
        self.update(|m| m.ddl_lock_waits += 1);
    }

    /// A transient error of `stage` is being retried.
    pub fn retrying(&self, stage: &'static str, error: &Error) {
        self.update(|m| {
            *m.retries.entry(stage).or_default() += 1;
            m.last_error = Some(error.to_string());
        });
    }

    /// The table stopped for good. Returns false when it had already.
    pub fn fail(&self, error: Arc<Error>) -> bool {
        self.stopped.store(true, Ordering::Relaxed);
        self.update(|m| {
            if m.failed.is_some() {
                return false;
            }
            m.failures += 1;
            m.running = false;
            if matches!(*error, Error::BadRow { .. }) {
                m.bad_rows += 1;
            }
            m.last_error = Some(error.to_string());
            m.failed = Some(error);
            true
        })
    }

    /// The table's stages have finished (shutdown, or `--once` caught up).
    pub fn finished(&self) {
        self.update(|m| m.running = false);
    }
}

static REGISTRY: LazyLock<Mutex<BTreeMap<String, Arc<TableHandle>>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// A table's pipeline starts: a fresh handle, registered for metrics.
/// The handle of a table registered by [`register`].
/// Set while this process is a member of its pipeline's group holding no table (a standby).
static STANDBY: AtomicBool = AtomicBool::new(false);

pub fn set_standby(standby: bool) {
    STANDBY.store(standby, Ordering::Relaxed);
}

pub fn standby() -> bool {
    STANDBY.load(Ordering::Relaxed)
}

pub fn handle(table: &str) -> Option<Arc<TableHandle>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(table)
        .cloned()
}

pub fn register(table: &str) -> Arc<TableHandle> {
    let h = Arc::new(TableHandle {
        name: table.to_string(),
        stopped: AtomicBool::new(false),
        metrics: Mutex::new(TableMetrics {
            running: true,
            ..TableMetrics::default()
        }),
    });
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(table.to_string(), h.clone());
    h
}

/// Forgets every table but `tables` (a table a pattern took that is gone is no longer
/// reported, nor counted by `/readyz`).
pub fn keep_only(tables: &[String]) {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|name, _| tables.contains(name));
}

/// A copy of every table's metrics.
pub fn snapshot() -> BTreeMap<String, TableMetrics> {
    let handles: Vec<Arc<TableHandle>> = REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    handles
        .iter()
        .map(|h| (h.name.clone(), h.snapshot()))
        .collect()
}

/// Prometheus label value escaping.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render(now: DateTime<Utc>) -> String {
    let tables = snapshot();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        samples(&mut out);
    };
    type Get = fn(&TableMetrics) -> f64;
    let simple: [(&str, &str, &str, Get); 10] = [
        (
            names::ROWS_READ,
            "counter",
            "Rows read from the source.",
            |m| m.rows_read as f64,
        ),
        (
            names::ROWS_WRITTEN,
            "counter",
            "Rows committed to the target.",
            |m| m.rows_written as f64,
        ),
        (
            names::BATCHES,
            "counter",
            "Batches committed to the target.",
            |m| m.batches as f64,
        ),
        (
            names::MERGED_BATCHES,
            "counter",
            "Batches that went through the staging merge (rows already present).",
            |m| m.merged_batches as f64,
        ),
        (
            names::BAD_ROWS,
            "counter",
            "Rows refused because a value cannot be carried to the target.",
            |m| m.bad_rows as f64,
        ),
        (
            names::DDL_LOCK_WAITS,
            "counter",
            "DDL statements on the target whose lock was not granted within [target] lock_timeout_ms (each is retried).",
            |m| m.ddl_lock_waits as f64,
        ),
        (
            names::FAILURES,
            "counter",
            "Permanent errors that stopped a table.",
            |m| m.failures as f64,
        ),
        (
            names::CHANNEL_ROWS,
            "gauge",
            "Rows waiting between the poller and the batcher.",
            |m| m.channel_rows as f64,
        ),
        (
            names::CHANNEL_BATCHES,
            "gauge",
            "Batches waiting between the batcher and the writer.",
            |m| m.channel_batches as f64,
        ),
        (
            names::TABLE_RUNNING,
            "gauge",
            "1 while the table's pipeline runs.",
            |m| f64::from(u8::from(m.running && m.failed.is_none())),
        ),
    ];
    for (name, kind, help, get) in simple {
        family(name, kind, help, &mut |o| {
            for (t, m) in &tables {
                let _ = writeln!(o, "{name}{{table=\"{}\"}} {}", label(t), get(m));
            }
        });
    }
    family(
        names::RETRIES,
        "counter",
        "Transient errors retried, by stage (poller, writer).",
        &mut |o| {
            for (t, m) in &tables {
                for stage in ["poller", "writer"] {
                    let n = m.retries.get(stage).copied().unwrap_or(0);
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\",stage=\"{stage}\"}} {n}",
                        names::RETRIES,
                        label(t)
                    );
                }
            }
        },
    );
    for (name, help, get) in [
        (
            names::BATCH_ROWS,
            "Rows per committed batch.",
            (|m: &TableMetrics| &m.batch_rows) as fn(&TableMetrics) -> &Histogram,
        ),
        (
            names::WRITE_SECONDS,
            "Time to write and commit one batch: the attempt that succeeded (retries excluded).",
            |m: &TableMetrics| &m.write_seconds,
        ),
    ] {
        family(name, "histogram", help, &mut |o| {
            for (t, m) in &tables {
                let h = get(m);
                let t = label(t);
                for (b, c) in h.bounds.iter().zip(&h.counts) {
                    let _ = writeln!(o, "{name}_bucket{{table=\"{t}\",le=\"{b}\"}} {c}");
                }
                let _ = writeln!(o, "{name}_bucket{{table=\"{t}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(o, "{name}_sum{{table=\"{t}\"}} {}", h.sum);
                let _ = writeln!(o, "{name}_count{{table=\"{t}\"}} {}", h.count);
            }
        });
    }
    family(
        names::CHANGES,
        "counter",
        "Changes committed to the target, by operation (upsert: polling cannot tell inserts from updates).",
        &mut |o| {
            for (t, m) in &tables {
                for (op, n) in m.ops.pairs() {
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\",op=\"{op}\"}} {n}",
                        names::CHANGES,
                        label(t)
                    );
                }
            }
        },
    );
    family(
        names::TRANSACTIONS,
        "counter",
        "Whole source transactions read (binlog capture).",
        &mut |o| {
            let _ = writeln!(
                o,
                "{} {}",
                names::TRANSACTIONS,
                TRANSACTIONS.load(Ordering::Relaxed)
            );
        },
    );
    family(
        names::EVENTS_SKIPPED,
        "counter",
        "Binlog events binlog capture skipped, by type: a type it does not apply, or a rows event it cannot read of a table it does not replicate (one of a replicated table stops that table instead).",
        &mut |o| {
            let skipped = EVENTS_SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
            for (kind, n) in skipped.iter() {
                let _ = writeln!(
                    o,
                    "{}{{type=\"{}\"}} {n}",
                    names::EVENTS_SKIPPED,
                    label(kind)
                );
            }
        },
    );
    family(
        names::ROWS_FUTURE,
        "gauge",
        "Polling with a time cursor: rows whose cursor value is ahead of the source's clock (they wait for it), counted every minute while caught up.",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(n) = m.rows_future {
                    let _ = writeln!(o, "{}{{table=\"{}\"}} {n}", names::ROWS_FUTURE, label(t));
                }
            }
        },
    );
    let verify: [(&str, &str, &str, Get); 3] = [
        (
            names::VERIFY_CHECKS,
            "counter",
            "Background comparisons of the table ([verify] interval_s).",
            |m| m.verify_checks as f64,
        ),
        (
            names::VERIFY_ROWS_COMPARED,
            "counter",
            "Source rows the background comparisons compared.",
            |m| m.verify_rows_compared as f64,
        ),
        (
            names::VERIFY_ROWS_REPAIRED,
            "counter",
            "Target rows the background comparisons repaired (upserted or deleted).",
            |m| m.verify_rows_repaired as f64,
        ),
    ];
    for (name, kind, help, get) in verify {
        family(name, kind, help, &mut |o| {
            for (t, m) in tables.iter().filter(|(_, m)| m.verify.is_some()) {
                let _ = writeln!(o, "{name}{{table=\"{}\"}} {}", label(t), get(m));
            }
        });
    }
    family(
        names::MEMBER_TABLES,
        "gauge",
        "Tables this process holds, labelled with its member id (host:pid) in the pipeline's group; 0 on a standby.",
        &mut |o| {
            let _ = writeln!(
                o,
                "{}{{member=\"{}\"}} {}",
                names::MEMBER_TABLES,
                label(&crate::config::owner_id()),
                tables.len()
            );
        },
    );
    family(
        names::VERIFY_ROWS_DIFFERING,
        "gauge",
        "Rows the last background comparison found missing on the target, extra on it, or different (before any repair).",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(r) = &m.verify {
                    for (kind, n) in [("missing", r.missing), ("extra", r.extra), ("different", r.different)] {
                        let _ = writeln!(
                            o,
                            "{}{{table=\"{}\",kind=\"{kind}\"}} {n}",
                            names::VERIFY_ROWS_DIFFERING,
                            label(t)
                        );
                    }
                }
            }
        },
    );
    family(
        names::VERIFY_LAST_CHECK,
        "gauge",
        "When the last background comparison of the table ended (Unix time).",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(at) = m.verify.as_ref().and_then(|r| r.checked_at) {
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\"}} {}",
                        names::VERIFY_LAST_CHECK,
                        label(t),
                        at.timestamp_millis() as f64 / 1e3
                    );
                }
            }
        },
    );
    family(
        names::BYTES_BEHIND,
        "gauge",
        "Binlog capture: bytes of binary log between the table's committed position and the server's end.",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(b) = m.bytes_behind {
                    let _ = writeln!(o, "{}{{table=\"{}\"}} {b}", names::BYTES_BEHIND, label(t));
                }
            }
        },
    );
    family(
        names::WATERMARK_AGE,
        "gauge",
        "Seconds since the table's watermark last advanced (in this process).",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(c) = m.last_commit {
                    let age = ((now - c).num_milliseconds() as f64 / 1e3).max(0.0);
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\"}} {age}",
                        names::WATERMARK_AGE,
                        label(t)
                    );
                }
            }
        },
    );
    family(
        names::LAG,
        "gauge",
        "0 when caught up, else now minus the cursor time of the newest row committed.",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(lag) = m.lag_seconds(now) {
                    let _ = writeln!(o, "{}{{table=\"{}\"}} {lag}", names::LAG, label(t));
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_lag() {
        let t = "telemetry_unit \"q\"";
        let h = register(t);
        h.rows_read(11, false);
        let newest = Utc::now() - chrono::Duration::seconds(5);
        h.committed(Commit {
            rows: 10,
            merged: false,
            dead_lettered: 1,
            newest: Some(newest),
            committed_at: Utc::now(),
            took: Duration::from_millis(7),
            ops: OpCounts {
                upsert: 10,
                ..OpCounts::default()
            },
            position: None,
        });
        assert!(binlog_event_skipped("telemetry_unit"));
        assert!(!binlog_event_skipped("telemetry_unit"));
        let text = render(Utc::now());
        assert!(text.contains("sluice_binlog_events_skipped_total{type=\"telemetry_unit\"} 2"));
        assert!(text.contains("sluice_rows_written_total{table=\"telemetry_unit \\\"q\\\"\"} 10"));
        assert!(text.contains("sluice_bad_rows_total{table=\"telemetry_unit \\\"q\\\"\"} 1"));
        assert!(text
            .contains("sluice_batch_rows_bucket{table=\"telemetry_unit \\\"q\\\"\",le=\"100\"} 1"));
        assert!(text
            .contains("sluice_write_duration_seconds_count{table=\"telemetry_unit \\\"q\\\"\"} 1"));
        assert!(text
            .contains("sluice_changes_total{table=\"telemetry_unit \\\"q\\\"\",op=\"upsert\"} 10"));
        let lag = h.snapshot().lag_seconds(Utc::now()).unwrap();
        assert!((4.0..10.0).contains(&lag), "{lag}");
        // Caught up with everything read committed (a dead letter counts): 0.
        h.rows_read(0, true);
        assert_eq!(h.snapshot().lag_seconds(Utc::now()), Some(0.0));
    }

    #[test]
    fn a_failure_stops_the_table_once() {
        let h = register("telemetry_fail");
        assert!(!h.stopped());
        assert!(h.fail(Arc::new(Error::Other("boom".into()))));
        assert!(!h.fail(Arc::new(Error::Other("again".into()))));
        let m = h.snapshot();
        assert!(h.stopped() && !m.running && m.failures == 1);
        assert_eq!(m.last_error.as_deref(), Some("boom"));
    }
}
