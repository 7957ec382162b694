//! One table's statistics ([`TableMetrics`]) and the handle its stages update them through
//! ([`TableHandle`]); the verify report kept with them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;

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

    pub(super) fn pairs(&self) -> [(&'static str, u64); 5] {
        [
            ("insert", self.insert),
            ("update", self.update),
            ("delete", self.delete),
            ("upsert", self.upsert),
            ("truncate", self.truncate),
        ]
    }
}

const BATCH_ROWS_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1000.0, 10_000.0, 50_000.0, 100_000.0];
const WRITE_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub(super) bounds: &'static [f64],
    pub(super) counts: Vec<u64>,
    pub(super) sum: f64,
    pub(super) count: u64,
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
    /// Rows a `where` filter kept off the target.
    pub rows_filtered: u64,
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
            rows_filtered: 0,
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

    /// The status page's lag: while caught up, how late the newest change was applied
    /// (its commit on the target minus its source time); with a backlog, [`Self::lag_seconds`].
    pub fn delay_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        let seconds =
            |d: chrono::Duration| (d.num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0);
        match (self.lag_seconds(now), self.last_commit, self.newest) {
            (Some(0.0), Some(c), Some(n)) => Some(seconds(c - n)),
            (l, ..) => l,
        }
    }
}

/// What one committed batch did to a table.
#[derive(Debug, Clone)]
pub struct Commit {
    pub rows: usize,
    pub merged: bool,
    pub dead_lettered: usize,
    /// Rows a `where` filter kept off the target.
    pub filtered: usize,
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
    /// A running table's fresh handle (see [`super::register`]).
    pub(super) fn new(table: &str) -> TableHandle {
        TableHandle {
            name: table.to_string(),
            stopped: AtomicBool::new(false),
            metrics: Mutex::new(TableMetrics {
                running: true,
                ..TableMetrics::default()
            }),
        }
    }

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
        if let Some(p) = &c.position {
            super::committed::note(&self.name, p);
        }
        self.update(|m| {
            m.rows_written += c.rows as u64;
            m.dead_lettered += c.dead_lettered as u64;
            m.rows_filtered += c.filtered as u64;
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
