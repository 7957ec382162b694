//! Typed settings: built-in defaults, then the TOML file (`--config`), then environment
//! variables, then command-line flags. [`Settings::validate`] is pure and names the key that
//! is wrong. Connection URLs are only ever shown through [`redact`].

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::redact::redact;
pub use crate::urls::{database_of, host_port};

pub const DEFAULT_SOURCE_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const DEFAULT_TARGET_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Everything `sluice` needs to know, fully resolved. The URLs hold the passwords given
/// apart from them (password files, `SLUICE_*_PASSWORD`); `Debug` shows them redacted.
#[derive(Clone, PartialEq)]
pub struct Settings {
    pub source_url: String,
    pub target_url: String,
    /// PostgreSQL schema that receives the replicated tables.
    pub target_schema: String,
    /// `[target] lock_timeout_ms`: the longest one DDL statement waits for its lock on a
    /// replicated table (its readers wait behind it as long); then it is retried.
    pub lock_timeout_ms: u64,
    /// `[target] ddl_wait_ms`: how long DDL keeps retrying before `status` says what it
    /// waits for (the initial load's key drop falls back to a keyed load instead).
    pub ddl_wait_ms: u64,
    /// How far behind the source's clock reads stay on a DATETIME/TIMESTAMP cursor (see
    /// README, Guarantees).
    pub safety_lag_ms: u64,
    /// What a zero date (`0000-00-00`, or a zero month or day) in the source becomes.
    pub zero_dates: ZeroDates,
    /// `[source] datetime_zone`: the time zone DATETIME cursors are written in; `None`: the
    /// server's global time zone (`SYSTEM` included).
    pub datetime_zone: Option<String>,
    /// `[source] capture`: how changes are read.
    pub capture: Capture,
    /// `[source] server_id`: the replica id binlog capture announces to the source.
    pub server_id: u32,
    /// `server_id` was derived (not configured): each member of a group announces its own
    /// ([`Settings::replica_id`]).
    pub server_id_derived: bool,
    pub pipeline: Pipeline,
    /// `[pipeline] name`, or derived from the source database and the target schema
    /// (`test/public`): what positions and ownership are stored under, so two pipelines
    /// into one target never share a table's state.
    pub pipeline_name: String,
    pub retry: Retry,
    /// `[verify]`: the comparison `run` makes in the background.
    pub verify: Verify,
    /// `[cluster]`: how `run` processes of one pipeline share its tables.
    pub cluster: Cluster,
    pub tables: Vec<TableSettings>,
    /// `[http] addr` / `SLUICE_HTTP_ADDR`: where `run` and `demo` serve /metrics, /healthz,
    /// /readyz and /status. Port 0 picks a free port (logged).
    pub http_addr: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("source_url", &redact(&self.source_url))
            .field("target_url", &redact(&self.target_url))
            .field("target_schema", &self.target_schema)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("ddl_wait_ms", &self.ddl_wait_ms)
            .field("safety_lag_ms", &self.safety_lag_ms)
            .field("zero_dates", &self.zero_dates)
            .field("datetime_zone", &self.datetime_zone)
            .field("capture", &self.capture)
            .field("server_id", &self.server_id)
            .field("pipeline", &self.pipeline)
            .field("pipeline_name", &self.pipeline_name)
            .field("retry", &self.retry)
            .field("verify", &self.verify)
            .field("cluster", &self.cluster)
            .field("tables", &self.tables)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

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
    /// quarter of it, and the rows in flight in the whole process at most three times it.
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
}

impl Pipeline {
    /// Bytes one read page holds at most (plus one row).
    pub fn page_bytes(&self) -> usize {
        (self.batch_bytes / 4).max(1)
    }

    /// Bytes of rows in flight (read and not yet committed) in the whole process at most,
    /// plus one page per lane being read.
    pub fn memory_budget(&self) -> usize {
        self.batch_bytes.saturating_mul(3)
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
    /// text/varchar/json/jsonb, bytea, date or timestamp; COPY text otherwise.
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

/// One `[[tables]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    /// Source table name (in the source URL's database).
    pub name: String,
    /// Column, or list of columns, that grows whenever a row is inserted or updated.
    /// Required with `capture = "poll"`; not used by binlog capture.
    #[serde(default)]
    pub cursor: Option<OneOrMany>,
    /// Primary-key columns; introspected from the source when absent.
    #[serde(default)]
    pub primary_key: Option<OneOrMany>,
    /// TINYINT(1) columns become `boolean` (true), or `smallint` (false). As booleans, a
    /// value other than 0 or 1 stops the table rather than turning into `true`.
    #[serde(default = "yes")]
    pub tinyint1_as_boolean: bool,
    /// Overrides `[pipeline] on_drop_column` for this table.
    #[serde(default)]
    pub on_drop_column: Option<OnDropColumn>,
    /// With a pattern in `name` (`*` any run of characters, `?` one): tables it does not
    /// take, as patterns too.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Taken by a pattern (set when patterns are expanded): the table going away is not a
    /// failure.
    #[serde(skip)]
    pub from_pattern: bool,
}

fn yes() -> bool {
    true
}

/// A column name or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Whether `name` matches glob `pattern` (`*`: any run of characters, `?`: one; case
/// sensitive, as table names are on most servers).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with backtracking to the last star.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

impl TableSettings {
    /// Whether `name` is a pattern (holds `*` or `?`) rather than one table.
    pub fn is_pattern(&self) -> bool {
        self.name.contains(['*', '?'])
    }

    /// Whether this entry takes source table `table`.
    pub fn takes(&self, table: &str) -> bool {
        if self.is_pattern() {
            glob_match(&self.name, table) && !self.exclude.iter().any(|x| glob_match(x, table))
        } else {
            self.name == table
        }
    }

    /// The demo table, used when the configuration names no table.
    pub fn demo_orders() -> Self {
        TableSettings {
            name: "orders".into(),
            cursor: Some(OneOrMany::One("created".into())),
            primary_key: None,
            tinyint1_as_boolean: true,
            on_drop_column: None,
            exclude: Vec::new(),
            from_pattern: false,
        }
    }
}

/// The TOML file, as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    source: FileSource,
    #[serde(default)]
    target: FileTarget,
    #[serde(default)]
    pipeline: Pipeline,
    #[serde(default)]
    retry: Retry,
    #[serde(default)]
    verify: Verify,
    #[serde(default)]
    cluster: Cluster,
    #[serde(default)]
    tables: Vec<TableSettings>,
    #[serde(default)]
    http: FileHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSource {
    url: Option<String>,
    password_file: Option<std::path::PathBuf>,
    safety_lag_ms: Option<u64>,
    zero_dates: Option<ZeroDates>,
    datetime_zone: Option<String>,
    capture: Option<Capture>,
    server_id: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTarget {
    url: Option<String>,
    password_file: Option<std::path::PathBuf>,
    lock_timeout_ms: Option<u64>,
    ddl_wait_ms: Option<u64>,
    schema: Option<String>,
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub source_url: Option<String>,
    pub target_url: Option<String>,
}

impl Settings {
    /// Reads the file (if any), applies the overrides, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("cannot read config file {}: {e}", path.display()))
                })?;
                Self::parse_toml(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => File::default(),
        };
        // Every password is known to the redaction before anything can print it.
        for url in [
            &overrides.source_url,
            &parsed.source.url,
            &overrides.target_url,
            &parsed.target.url,
        ]
        .into_iter()
        .flatten()
        {
            crate::redact::register_url(url);
        }
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            crate::redact::register(&pw);
        }
        let source_password = password_apart("source", parsed.source.password_file.as_deref())?;
        let target_password = password_apart("target", parsed.target.password_file.as_deref())?;
        let mut settings = Settings {
            pipeline_name: String::new(),
            source_url: overrides
                .source_url
                .clone()
                .or(parsed.source.url)
                .unwrap_or_else(|| DEFAULT_SOURCE_URL.into()),
            target_url: overrides
                .target_url
                .clone()
                .or(parsed.target.url)
                .unwrap_or_else(|| DEFAULT_TARGET_URL.into()),
            target_schema: parsed.target.schema.unwrap_or_else(|| "public".into()),
            lock_timeout_ms: parsed.target.lock_timeout_ms.unwrap_or(1000),
            ddl_wait_ms: parsed.target.ddl_wait_ms.unwrap_or(60_000),
            safety_lag_ms: parsed.source.safety_lag_ms.unwrap_or(DEFAULT_SAFETY_LAG_MS),
            zero_dates: parsed.source.zero_dates.unwrap_or_default(),
            datetime_zone: parsed.source.datetime_zone,
            capture: parsed.source.capture.unwrap_or_default(),
            server_id: parsed.source.server_id.unwrap_or(0),
            server_id_derived: false,
            pipeline: parsed.pipeline,
            retry: parsed.retry,
            verify: parsed.verify,
            cluster: parsed.cluster,
            tables: if parsed.tables.is_empty() {
                vec![TableSettings::demo_orders()]
            } else {
                parsed.tables
            },
            http_addr: std::env::var("SLUICE_HTTP_ADDR")
                .ok()
                .or(parsed.http.addr)
                .unwrap_or_else(|| DEFAULT_HTTP_ADDR.into()),
        };
        if parsed.source.server_id == Some(0) {
            return Err(Error::Config(
                "[source] server_id must be 1..4294967295 (0 is no replica id), unique among the source's replicas; leave it out to derive one from the pipeline name".into(),
            ));
        }
        settings.validate()?;
        if let Some((pw, from)) = source_password {
            settings.source_url = with_password(&settings.source_url, &pw, "source", &from)?;
        }
        if let Some((pw, from)) = target_password {
            settings.target_url = with_password(&settings.target_url, &pw, "target", &from)?;
        }
        settings.pipeline_name = match &settings.pipeline.name {
            Some(n) => n.clone(),
            None => format!(
                "{}/{}",
                database_of(&settings.source_url),
                settings.target_schema
            ),
        };
        if settings.server_id == 0 {
            settings.server_id = default_server_id(&settings.pipeline_name);
            settings.server_id_derived = true;
        }
        Ok(settings)
    }

    /// The replica id this process's binlog stream announces: the configured one, or one
    /// derived from the pipeline and this process (`host:pid`), so the members of a group,
    /// each streaming the binlog for its own tables, never share one (the source would cut
    /// one of two replicas with the same id off).
    pub fn replica_id(&self) -> u32 {
        if self.server_id_derived {
            default_server_id(&format!("{}/{}", self.pipeline_name, owner_id()))
        } else {
            self.server_id
        }
    }

    fn parse_toml(text: &str) -> std::result::Result<File, String> {
        toml::from_str::<File>(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks every value; the message names the key and the accepted range.
    pub fn validate(&self) -> Result<()> {
        check_url(
            "source.url / SLUICE_SOURCE_URL / --source",
            &self.source_url,
            &["mysql", "mariadb"],
        )?;
        check_url(
            "target.url / SLUICE_TARGET_URL / --target",
            &self.target_url,
            &["postgres", "postgresql"],
        )?;
        if self.target_schema.is_empty() {
            return Err(Error::Config("target.schema must not be empty".into()));
        }
        let p = &self.pipeline;
        let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(Error::Config(format!(
                    "{key} = {v} is out of range: use a value from {lo} to {hi}"
                )))
            } else {
                Ok(())
            }
        };
        in_range("pipeline.batch_rows", p.batch_rows as u64, 1, 1_000_000)?;
        in_range(
            "pipeline.batch_bytes",
            p.batch_bytes as u64,
            64 << 10,
            1 << 30,
        )?;
        in_range(
            "pipeline.max_source_connections",
            p.max_source_connections as u64,
            2,
            1000,
        )?;
        in_range(
            "pipeline.max_target_connections",
            p.max_target_connections as u64,
            4,
            1000,
        )?;
        if let Some(name) = &p.name {
            if name.is_empty() || name.len() > 200 {
                return Err(Error::Config(
                    "pipeline.name must hold 1 to 200 characters".into(),
                ));
            }
        }
        in_range("pipeline.linger_ms", p.linger_ms, 0, 60_000)?;
        in_range(
            "pipeline.poll_interval_ms",
            p.poll_interval_ms,
            1,
            3_600_000,
        )?;
        in_range(
            "pipeline.channel_capacity",
            p.channel_capacity as u64,
            1,
            1024,
        )?;
        // IP:port, or a host name and port (resolved when bound: localhost:9731).
        let host_and_port = self.http_addr.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains(['/', ' ']) && p.parse::<u16>().is_ok()
        });
        if self.http_addr.parse::<std::net::SocketAddr>().is_err() && !host_and_port {
            return Err(Error::Config(format!(
                "http.addr / SLUICE_HTTP_ADDR {:?} is not an address like 127.0.0.1:9731 or localhost:9731",
                self.http_addr
            )));
        }
        in_range("source.safety_lag_ms", self.safety_lag_ms, 0, 86_400_000)?;
        in_range("target.lock_timeout_ms", self.lock_timeout_ms, 10, 600_000)?;
        if let Some(z) = &self.datetime_zone {
            let ok = !z.is_empty()
                && z.len() <= 64
                && z.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-:/_".contains(c));
            if !ok {
                return Err(Error::Config(format!(
                    "source.datetime_zone = {z:?} is not a time zone: use an offset like \"+02:00\", \"SYSTEM\", or a name like \"Europe/Berlin\" (with the server's time zone tables loaded)"
                )));
            }
        }
        in_range("target.ddl_wait_ms", self.ddl_wait_ms, 0, 86_400_000)?;
        let r = &self.retry;
        in_range(
            "retry.connect_timeout_ms",
            r.connect_timeout_ms,
            0,
            86_400_000,
        )?;
        in_range("retry.backoff_base_ms", r.backoff_base_ms, 1, 3_600_000)?;
        in_range(
            "retry.backoff_max_ms",
            r.backoff_max_ms,
            r.backoff_base_ms,
            3_600_000,
        )?;
        in_range("verify.interval_s", self.verify.interval_s, 0, 31_536_000)?;
        in_range(
            "cluster.member_timeout_ms",
            self.cluster.member_timeout_ms,
            2_000,
            3_600_000,
        )?;
        in_range(
            "verify.max_rows_per_s",
            self.verify.max_rows_per_s,
            100,
            100_000_000,
        )?;
        if self.verify.interval_s > 0
            && (p.max_source_connections < 3 || p.max_target_connections < 5)
        {
            return Err(Error::Config(format!(
                "the background verify ([verify] interval_s) holds a connection to each side of its own: it needs pipeline.max_source_connections >= 3 and pipeline.max_target_connections >= 5 (they are {} and {})",
                p.max_source_connections, p.max_target_connections
            )));
        }
        if self.verify.repair && self.verify.interval_s == 0 {
            return Err(Error::Config(
                "verify.repair = true needs verify.interval_s > 0 (how often `run` compares the tables); the on-demand check is `sluice verify --repair`".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = format!("tables[{i}]");
            if t.name.is_empty() {
                return Err(Error::Config(format!("{at}.name must not be empty")));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(Error::Config(format!(
                    "{at}: table {:?} is listed twice; list each table once",
                    t.name
                )));
            }
            if !t.exclude.is_empty() && !t.is_pattern() {
                return Err(Error::Config(format!(
                    "{at}.exclude (table {:?}) only applies to a pattern: give `name` a `*` or `?` (e.g. name = \"*\"), or remove `exclude`",
                    t.name
                )));
            }
            match (&t.cursor, self.capture) {
                (None, Capture::Poll) => {
                    return Err(Error::Config(format!(
                        "{at}.cursor (table {:?}) is missing: polling reads rows in the order of a column that grows on every insert and update (e.g. cursor = \"updated_at\"); name one, or use [source] capture = \"binlog\", which needs none",
                        t.name
                    )))
                }
                (Some(c), _) if c.to_vec().is_empty() || c.to_vec().iter().any(|c| c.is_empty()) => {
                    return Err(Error::Config(format!(
                        "{at}.cursor (table {:?}) must name at least one column",
                        t.name
                    )));
                }
                _ => {}
            }
            if let Some(pk) = &t.primary_key {
                let pk = pk.to_vec();
                if pk.is_empty() || pk.iter().any(|c| c.is_empty()) {
                    return Err(Error::Config(format!(
                        "{at}.primary_key (table {:?}) must name at least one column, or be left out to introspect it",
                        t.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The password a side is given apart from its URL, and where it came from: the
/// environment (`SLUICE_SOURCE_PASSWORD`, `SLUICE_SOURCE_PASSWORD_FILE`) or the file's
/// `[source] password_file` (and the same for `target`). At most one of them.
fn password_apart(side: &str, file: Option<&Path>) -> Result<Option<(String, String)>> {
    let upper = side.to_ascii_uppercase();
    let env_pw = format!("SLUICE_{upper}_PASSWORD");
    let env_file = format!("SLUICE_{upper}_PASSWORD_FILE");
    let mut given: Vec<(String, String)> = Vec::new();
    if let Ok(pw) = std::env::var(&env_pw) {
        crate::redact::register(&pw);
        given.push((pw, env_pw.clone()));
    }
    let env_path = std::env::var_os(&env_file).map(std::path::PathBuf::from);
    for (path, from) in [
        (env_path.as_deref(), env_file.clone()),
        (file, format!("[{side}] password_file")),
    ] {
        let Some(path) = path else { continue };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "{from}: cannot read the password file {}: {e}",
                path.display()
            ))
        })?;
        let pw = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_string();
        crate::redact::register(&pw);
        if pw.is_empty() {
            return Err(Error::Config(format!(
                "{from}: the password file {} is empty",
                path.display()
            )));
        }
        given.push((pw, format!("{from} ({})", path.display())));
    }
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(_, from)| from.as_str()).collect();
        return Err(Error::Config(format!(
            "the {side} password is given {} ways ({}); keep one",
            given.len(),
            names.join(", ")
        )));
    }
    Ok(given.pop())
}

/// `raw` with `password` set as its password; refused when the URL holds one already.
fn with_password(raw: &str, password: &str, side: &str, from: &str) -> Result<String> {
    let mut url = url::Url::parse(raw)
        .map_err(|e| Error::Config(format!("{side} URL {} is not valid: {e}", redact(raw))))?;
    if url.password().is_some() {
        return Err(Error::Config(format!(
            "the {side} password is given twice: in the URL {} and by {from}; keep one (a password file keeps it out of the URL)",
            redact(raw)
        )));
    }
    url.set_password(Some(password)).map_err(|()| {
        Error::Config(format!("{side} URL {} cannot hold a password", redact(raw)))
    })?;
    Ok(url.to_string())
}

fn check_url(key: &str, raw: &str, schemes: &[&str]) -> Result<()> {
    let url = url::Url::parse(raw)
        .map_err(|e| Error::Config(format!("{key}: {:?} is not a URL ({e})", redact(raw))))?;
    if !schemes.contains(&url.scheme()) {
        return Err(Error::Config(format!(
            "{key}: scheme {:?} in {} is not supported; use {}://user@host:port/database",
            url.scheme(),
            redact(raw),
            schemes[0]
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "{key}: {} names no host",
            redact(raw)
        )));
    }
    if url.path().trim_start_matches('/').is_empty() {
        return Err(Error::Config(format!(
            "{key}: {} names no database; add it as the path, e.g. /test",
            redact(raw)
        )));
    }
    Ok(())
}

/// The replica id binlog capture announces when `[source] server_id` is not set: stable for
/// a pipeline, and unlikely to meet another replica's (which would cut one of the two off).
pub fn default_server_id(pipeline: &str) -> u32 {
    // FNV-1a, folded into 1_000_000 .. 2^31.
    let mut h: u32 = 0x811c_9dc5;
    for b in pipeline.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    1_000_000 + h % (i32::MAX as u32 - 1_000_000)
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

/// Who this process is, in `replication_state.owner`: `host:pid`.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

impl Settings {
    /// How DDL on the target waits for its locks.
    pub fn lock_wait(&self) -> LockWait {
        LockWait {
            lock_timeout: std::time::Duration::from_millis(self.lock_timeout_ms),
            patience: std::time::Duration::from_millis(self.ddl_wait_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Settings> {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, text).unwrap();
        let r = Settings::load(Some(&dir), &Overrides::default());
        std::fs::remove_file(&dir).unwrap();
        r
    }

    #[test]
    fn http_addr_is_an_ip_or_a_host_name_with_a_port() {
        for ok in [
            "127.0.0.1:9731",
            "localhost:9731",
            "[::1]:0",
            "0.0.0.0:80",
            "sluice.local:1",
        ] {
            let s = load_str(&format!("[http]\naddr = \"{ok}\"\n"));
            assert!(s.is_ok(), "{ok}: {s:?}");
        }
        for bad in [
            "9731",
            "localhost",
            "http://localhost:9731",
            ":9731",
            "h:99999",
        ] {
            let e = load_str(&format!("[http]\naddr = \"{bad}\"\n")).unwrap_err();
            assert!(e.to_string().contains("localhost:9731"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_password_file_fills_the_url_and_debug_never_shows_it() {
        let pw = std::env::temp_dir().join(format!("sluice-pw-{}", uuid::Uuid::new_v4()));
        std::fs::write(&pw, "Fi1e-pw/@x\n").unwrap();
        let text = format!(
            "[source]\nurl = \"mysql://u@h:3306/db\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let s = load_str(&text).unwrap();
        assert_eq!(
            url::Url::parse(&s.source_url).unwrap().password(),
            Some("Fi1e-pw%2F%40x")
        );
        assert!(!format!("{s:?}").contains("Fi1e-pw"), "{s:?}");
        // And given twice, refused.
        let twice = text.replace("mysql://u@", "mysql://u:other@");
        let e = load_str(&twice).unwrap_err().to_string();
        assert!(
            e.contains("given twice") && e.contains("password_file"),
            "{e}"
        );
        assert!(!e.contains("other"), "{e}");
        std::fs::remove_file(&pw).unwrap();
    }

    #[test]
    fn defaults_replicate_the_demo_table() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.source_url, DEFAULT_SOURCE_URL);
        assert_eq!(s.target_url, DEFAULT_TARGET_URL);
        assert_eq!(s.tables, vec![TableSettings::demo_orders()]);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let path = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "[source]\nurl = \"mysql://a@h:1/x\"\n").unwrap();
        let o = Overrides {
            source_url: Some("mysql://b@h:2/y".into()),
            target_url: None,
        };
        let s = Settings::load(Some(&path), &o).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.source_url, "mysql://b@h:2/y");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("[pipeline]\nbatch_size = 3\n").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("batch_size"), "{err}");
    }

    #[test]
    fn verify_section_defaults_off_and_checks_its_values() {
        let s = load_str("").unwrap();
        assert_eq!(s.verify, Verify::default());
        assert_eq!(s.verify.interval_s, 0);
        let s =
            load_str("[verify]\ninterval_s = 60\nrepair = true\nmax_rows_per_s = 5000\n").unwrap();
        assert_eq!((s.verify.interval_s, s.verify.repair), (60, true));
        let e = load_str("[verify]\nrepair = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("verify.interval_s > 0"), "{e}");
        let e = load_str("[verify]\ninterval_s = 5\nmax_rows_per_s = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verify.max_rows_per_s = 1 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn patterns_take_tables_by_glob_less_exclusions() {
        assert!(glob_match("orders_*", "orders_2026"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a?c*z", "abcxyz"));
        assert!(!glob_match("orders_*", "order_x"));
        assert!(!glob_match("a?c", "ac"));
        let t = TableSettings {
            name: "*".into(),
            exclude: vec!["audit_*".into()],
            ..TableSettings::demo_orders()
        };
        assert!(t.is_pattern() && t.takes("orders") && !t.takes("audit_log"));
        assert!(!TableSettings::demo_orders().is_pattern());
        let err =
            load_str("[[tables]]\nname = \"a\"\ncursor = \"id\"\nexclude = [\"b\"]\n").unwrap_err();
        assert!(
            err.to_string().contains("only applies to a pattern"),
            "{err}"
        );
        let s = load_str("[[tables]]\nname = \"*\"\ncursor = \"id\"\nexclude = [\"audit_*\"]\n")
            .unwrap();
        assert!(s.tables[0].is_pattern());
    }

    #[test]
    fn tables_accept_one_or_many_columns() {
        let s =
            load_str("[[tables]]\nname = \"a\"\ncursor = [\"u\", \"v\"]\nprimary_key = \"id\"\n")
                .unwrap();
        assert_eq!(
            s.tables[0].cursor.as_ref().unwrap().to_vec(),
            vec!["u", "v"]
        );
        assert_eq!(
            s.tables[0].primary_key.as_ref().unwrap().to_vec(),
            vec!["id"]
        );
    }

    #[test]
    fn zero_dates_and_tinyint1_settings() {
        let s = load_str("[[tables]]\nname = \"a\"\ncursor = \"id\"\n").unwrap();
        assert_eq!(s.zero_dates, ZeroDates::Null);
        assert!(s.tables[0].tinyint1_as_boolean);
        let s = load_str(
            "[source]\nzero_dates = \"error\"\n[[tables]]\nname = \"a\"\ncursor = \"id\"\ntinyint1_as_boolean = false\n",
        )
        .unwrap();
        assert_eq!(s.zero_dates, ZeroDates::Error);
        assert!(!s.tables[0].tinyint1_as_boolean);
        let err = load_str("[source]\nzero_dates = \"zero\"\n").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("zero_dates"), "{err}");
    }

    #[test]
    fn pipeline_name_is_derived_from_source_database_and_target_schema() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.pipeline_name, "test/public");
        let s = load_str("[target]\nschema = \"copy\"\n").unwrap();
        assert_eq!(s.pipeline_name, "test/copy");
        let s = load_str("[pipeline]\nname = \"eu\"\n").unwrap();
        assert_eq!(s.pipeline_name, "eu");
    }

    #[test]
    fn binlog_capture_needs_no_cursor_and_polling_says_which_is_missing() {
        let s = load_str(
            "[source]\ncapture = \"binlog\"\nserver_id = 4242\n[[tables]]\nname = \"a\"\n",
        )
        .unwrap();
        assert_eq!((s.capture, s.server_id), (Capture::Binlog, 4242));
        let zero =
            load_str("[source]\ncapture = \"binlog\"\nserver_id = 0\n[[tables]]\nname = \"a\"\n");
        assert!(zero
            .unwrap_err()
            .to_string()
            .contains("server_id must be 1..4294967295"));
        let err = load_str("[[tables]]\nname = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("tables[0].cursor"), "{err}");
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.capture, Capture::Poll);
        assert!(s.server_id >= 1_000_000, "{}", s.server_id);
        assert_eq!(s.server_id, default_server_id("test/public"));
    }

    #[test]
    fn lanes_are_bounded_by_connections() {
        let p = Pipeline::default();
        assert_eq!(p.lanes(1, false), 1);
        assert_eq!(p.lanes(300, false), 3);
        assert_eq!(p.lanes(300, true), 2);
        let err = load_str("[pipeline]\nmax_target_connections = 2\n").unwrap_err();
        assert!(err.to_string().contains("max_target_connections"), "{err}");
    }

    #[test]
    fn zero_batch_is_refused_with_its_key() {
        let err = load_str("[pipeline]\nbatch_rows = 0\n").unwrap_err();
        assert!(err.to_string().contains("pipeline.batch_rows"), "{err}");
    }

    #[test]
    fn wrong_scheme_is_refused_without_the_password() {
        let o = Overrides {
            source_url: Some("postgres://u:hunter2@h:1/db".into()),
            target_url: None,
        };
        let err = Settings::load(None, &o).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("source.url"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn host_port_names_the_server() {
        assert_eq!(
            host_port("postgres://u:pw@db.example:6543/x"),
            "db.example:6543"
        );
        assert_eq!(host_port("mysql://u@h/x"), "h:3306");
    }
}
