//! The sections of the file that are read as they are written (`[pipeline]`, `[retry]`,
//! `[verify]`, `[cluster]`), the choices of its keys, and how each section checks itself.

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9731";

/// `[retry]`: how transient failures are retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// At start-up, how long an unreachable server is retried before giving up.
    pub connect_timeout_ms: u64,
    /// First backoff delay; it doubles per attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Longest backoff delay.
    pub backoff_max_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            connect_timeout_ms: 30_000,
            backoff_base_ms: 100,
            backoff_max_ms: 30_000,
        }
    }
}

/// `[verify]`: the background comparison of source and target that `run` makes (see
/// `verify::check`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// Compare every table once per this many seconds; 0: never.
    pub interval_s: u64,
    /// Repair what the comparison finds (as `verify --repair` does).
    pub repair: bool,
    /// Rows read per second at most, on each side, so the comparison never starves
    /// replication.
    pub max_rows_per_s: u64,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            interval_s: 0,
            repair: false,
            max_rows_per_s: 200_000,
        }
    }
}

/// `[cluster]`: the `run` processes of one pipeline share its tables (see
/// `state::members`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// A member whose heartbeat is older than this is presumed dead (one whose PostgreSQL
    /// session is gone is, at once).
    pub member_timeout_ms: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            member_timeout_ms: 10_000,
        }
    }
}

pub const DEFAULT_SAFETY_LAG_MS: u64 = 20;

/// `[pipeline]`: how rows are grouped and how often the source is asked for more.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pipeline {
    /// The pipeline's name (see [`Settings::pipeline_name`]); `None`: derived.
    pub name: Option<String>,
    /// A batch is written when it holds this many rows. Reads go in pages of up to 10,000.
    pub batch_rows: usize,
    /// ... or this many bytes (rows as they are held in memory). Pages hold at most a
    /// quarter of it, and the rows in flight in the whole process at most twice it.
    pub batch_bytes: usize,
    /// ... or when this long has passed since its first row arrived.
    pub linger_ms: u64,
    /// How long the poller waits before asking again once it has caught up.
    pub poll_interval_ms: u64,
    /// What a row PostgreSQL refuses does: stop the table, or go to `sluice.dead_letters`.
    pub on_bad_row: OnBadRow,
    /// A column dropped on the source: the target keeps it (nullable, NULL in rows written
    /// from then on) or drops it too. Per table in `[[tables]] on_drop_column`.
    pub on_drop_column: OnDropColumn,
    /// Give target tables the source's secondary indexes (built once a table's initial load
    /// is over, and followed when the source adds or drops one).
    pub indexes: bool,
    /// Batches that may wait between the batcher and the writer (the row channel between
    /// poller and batcher holds one page of rows).
    pub channel_capacity: usize,
    /// Polling with a time cursor: a table without a position is read first in primary-key
    /// order (a scan of the clustered index, as a dump reads it), then by its cursor from the
    /// horizon measured when that load started.
    pub key_order_load: bool,
    /// ... when the source holds at least this many rows (InnoDB's estimate).
    pub key_order_load_min_rows: u64,
    /// Initial load with the key deferred: when a table has no watermark yet, its target
    /// table is empty and the source holds at least `defer_key_min_rows` rows (InnoDB's
    /// estimate), the target's primary key is dropped, the backlog is copied without index
    /// maintenance, and the key is built again once the source is caught up.
    pub defer_key: bool,
    /// The smallest backlog (source rows, estimated) for which `defer_key` applies.
    pub defer_key_min_rows: u64,
    /// COPY format: binary when every target column's type allows it (`auto`), or text.
    pub copy_format: CopyFormat,
    /// What a table's permanent failure does to the others.
    pub on_table_error: OnTableError,
    /// Connections sluice opens to the source at most: one reader per lane of tables, and
    /// one for status, progress and `/readyz`.
    pub max_source_connections: usize,
    /// Connections sluice opens to the target at most: one writer per lane, the one that
    /// holds table ownership, the group member's, and one for status, progress and `/readyz`.
    pub max_target_connections: usize,
    /// A file whose bytes key the `sha256` masks (`[[tables]] mask_columns`): an HMAC, so
    /// that a masked value cannot be found by hashing guesses without the file.
    pub mask_salt_file: Option<String>,
}

impl Pipeline {
    /// Bytes one read page holds at most (plus one row).
    pub fn page_bytes(&self) -> usize {
        (self.batch_bytes / 4).max(1)
    }

    /// Bytes of rows in flight (read and not yet committed) in the whole process at most,
    /// plus one page per lane being read. Twice a batch: one being written, one filling.
    /// (Three times, with binlog row images decoded faster than the target took them, let
    /// the whole process reach 70 MiB in `tests/binlog.rs`'s million-row transaction.)
    pub fn memory_budget(&self) -> usize {
        self.batch_bytes.saturating_mul(2)
    }

    /// Lanes for `tables` tables: each lane is one reader, one batcher and one writer
    /// thread with one connection to each side, serving its share of the tables. Besides
    /// them: the helper connection to each side, the ownership session and the group member's
    /// session on the target; `verify`: the background verify's connection to each side.
    pub fn lanes(&self, tables: usize, verify: bool) -> usize {
        let v = usize::from(verify);
        tables
            .min(self.max_source_connections.saturating_sub(1 + v))
            .min(self.max_target_connections.saturating_sub(3 + v))
            .max(1)
    }
}

/// `[pipeline] on_table_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTableError {
    /// Stop that table only; the others go on, and the run ends with exit 1.
    #[default]
    StopTable,
    /// Stop every table.
    StopAll,
}

/// `[pipeline] copy_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFormat {
    /// COPY binary for tables whose every target column is boolean, an integer, a float,
    /// numeric, text/varchar/json/jsonb, bytea, date, timestamp or timestamptz; COPY text
    /// otherwise.
    #[default]
    Auto,
    /// Always COPY text.
    Text,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            name: None,
            batch_rows: 50_000,
            batch_bytes: 8 << 20,
            linger_ms: 20,
            poll_interval_ms: 25,
            channel_capacity: 1,
            key_order_load: true,
            key_order_load_min_rows: 100_000,
            on_bad_row: OnBadRow::Stop,
            on_drop_column: OnDropColumn::Keep,
            indexes: true,
            defer_key: true,
            defer_key_min_rows: 100_000,
            copy_format: CopyFormat::Auto,
            on_table_error: OnTableError::StopTable,
            max_source_connections: 4,
            max_target_connections: 8,
            mask_salt_file: None,
        }
    }
}

/// `[source] capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    /// Keyset polling past a watermark: needs only SELECT; sees inserts and the updates
    /// that move the cursor.
    #[default]
    Poll,
    /// The row-based binary log: every insert, update and delete, whole source transactions.
    Binlog,
}

/// `[source] zero_dates`: MySQL can hold dates PostgreSQL (and the calendar) cannot:
/// `0000-00-00`, `2024-00-00`, `2024-05-00`, with or without a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroDates {
    /// Replicate them as NULL (the default; how most MySQL clients read them).
    #[default]
    Null,
    /// Stop the table with an error naming the row and column.
    Error,
}

/// `[source] on_binlog_gone`: binlog capture finds that the source purged the binlog file a
/// table's position is in (sluice was stopped longer than the binlog is kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBinlogGone {
    /// Stop, naming the file and how to start over (the default: nothing is copied again
    /// behind the operator's back).
    #[default]
    Stop,
    /// Copy each such table again (its target emptied and copied beside the stream, or
    /// before it when no table streams), logged at warn and counted.
    Snapshot,
}

/// `[pipeline] on_bad_row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRow {
    /// Stop the table with its name, the row's key and the reason (in the log and `status`).
    #[default]
    Stop,
    /// Write the row (as JSON) and the error to `sluice.dead_letters`, count it, go on.
    DeadLetter,
}

/// `[pipeline] on_drop_column` / `[[tables]] on_drop_column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDropColumn {
    /// The target column stays, allows NULL from then on and receives NULL.
    #[default]
    Keep,
    /// The target column is dropped too (with its values).
    Drop,
}

/// `key = v` within `lo..=hi`, or an error naming the key and the range.
pub(super) fn in_range(key: &str, v: u64, lo: u64, hi: u64) -> Result<()> {
    if v < lo || v > hi {
        Err(Error::Config(format!(
            "{key} = {v} is out of range: use a value from {lo} to {hi}"
        )))
    } else {
        Ok(())
    }
}

impl Pipeline {
    pub fn validate(&self) -> Result<()> {
        in_range("pipeline.batch_rows", self.batch_rows as u64, 1, 1_000_000)?;
        in_range(
            "pipeline.batch_bytes",
            self.batch_bytes as u64,
            64 << 10,
            1 << 30,
        )?;
        in_range(
            "pipeline.max_source_connections",
            self.max_source_connections as u64,
            2,
            1000,
        )?;
        in_range(
            "pipeline.max_target_connections",
            self.max_target_connections as u64,
            4,
            1000,
        )?;
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 200 {
                return Err(Error::Config(
                    "pipeline.name must hold 1 to 200 characters".into(),
                ));
            }
        }
        in_range("pipeline.linger_ms", self.linger_ms, 0, 60_000)?;
        in_range(
            "pipeline.poll_interval_ms",
            self.poll_interval_ms,
            1,
            3_600_000,
        )?;
        in_range(
            "pipeline.channel_capacity",
            self.channel_capacity as u64,
            1,
            1024,
        )
    }
}

impl Retry {
    pub fn validate(&self) -> Result<()> {
        in_range(
            "retry.connect_timeout_ms",
            self.connect_timeout_ms,
            0,
            86_400_000,
        )?;
        in_range("retry.backoff_base_ms", self.backoff_base_ms, 1, 3_600_000)?;
        in_range(
            "retry.backoff_max_ms",
            self.backoff_max_ms,
            self.backoff_base_ms,
            3_600_000,
        )
    }
}

impl Verify {
    /// Also checks that the pipeline leaves the background verify its connections.
    pub fn validate(&self, p: &Pipeline) -> Result<()> {
        in_range("verify.interval_s", self.interval_s, 0, 31_536_000)?;
        in_range(
            "verify.max_rows_per_s",
            self.max_rows_per_s,
            100,
            100_000_000,
        )?;
        if self.interval_s > 0 && (p.max_source_connections < 3 || p.max_target_connections < 5) {
            return Err(Error::Config(format!(
                "the background verify ([verify] interval_s) holds a connection to each side of its own: it needs pipeline.max_source_connections >= 3 and pipeline.max_target_connections >= 5 (they are {} and {})",
                p.max_source_connections, p.max_target_connections
            )));
        }
        if self.repair && self.interval_s == 0 {
            return Err(Error::Config(
                "verify.repair = true needs verify.interval_s > 0 (how often `run` compares the tables); the on-demand check is `sluice verify --repair`".into(),
            ));
        }
        Ok(())
    }
}

impl Cluster {
    pub fn validate(&self) -> Result<()> {
        in_range(
            "cluster.member_timeout_ms",
            self.member_timeout_ms,
            2_000,
            3_600_000,
        )
    }
}

/// How DDL waits for its lock (`[target] lock_timeout_ms`, `[target] ddl_wait_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWait {
    /// The longest one attempt waits for its lock (readers behind it wait as long).
    pub lock_timeout: std::time::Duration,
    /// How long the attempts go on before the caller is told (it falls back, or says so
    /// in `status` and goes on trying).
    pub patience: std::time::Duration,
}

impl Default for LockWait {
    fn default() -> Self {
        LockWait {
            lock_timeout: std::time::Duration::from_millis(1000),
            patience: std::time::Duration::from_secs(60),
        }
    }
}
