//! Typed settings: built-in defaults, then the TOML file (`--config`), then environment
//! variables, then command-line flags. [`Settings::validate`] is pure and names the key that
//! is wrong. Connection URLs are only ever shown through [`redact`].

use std::path::Path;

mod file;
mod sections;
mod tables;

use crate::error::{Error, Result};
use crate::redact::redact;

use self::file::{check_url, password_apart, with_password, File};
pub use self::sections::*;
pub use self::tables::{glob_match, Mask, OneOrMany, TableSettings};
pub use crate::urls::{database_of, host_port};

pub const DEFAULT_SOURCE_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const DEFAULT_TARGET_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Everything `sluice` needs to know, fully resolved. The URLs hold the passwords given
/// apart from them (password files, `SLUICE_*_PASSWORD`); `Debug` shows them redacted.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// `[source]`: where changes are read and how.
    pub source: SourceConfig,
    /// `[target]`: where they are written.
    pub target: TargetConfig,
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
    /// `[http]`: the HTTP surface of `run` and `demo`.
    pub http: HttpConfig,
    /// The bytes of `[pipeline] mask_salt_file`, read at start.
    pub mask_salt: Option<std::sync::Arc<Vec<u8>>>,
}

/// `[source]`, resolved.
#[derive(Clone, PartialEq)]
pub struct SourceConfig {
    /// The URL, holding the password given apart from it.
    pub url: String,
    /// How far behind the source's clock reads stay on a DATETIME/TIMESTAMP cursor (see
    /// the book, `docs/src/internals/guarantees.md`: Time cursors and clocks).
    pub safety_lag_ms: u64,
    /// What a zero date (`0000-00-00`, or a zero month or day) in the source becomes.
    pub zero_dates: ZeroDates,
    /// `[source] datetime_zone`: the time zone DATETIME cursors are written in; `None`: the
    /// server's global time zone (`SYSTEM` included).
    pub datetime_zone: Option<String>,
    /// `[source] capture`: how changes are read.
    pub capture: Capture,
    /// `[source] on_binlog_gone`: what binlog capture does when a table's binlog was purged.
    pub on_binlog_gone: OnBinlogGone,
    /// `[source] server_id`: the replica id binlog capture announces to the source.
    pub server_id: u32,
    /// `server_id` was derived (not configured): each member of a group announces its own
    /// ([`Settings::replica_id`]).
    pub server_id_derived: bool,
}

/// `[target]`, resolved.
#[derive(Clone, PartialEq)]
pub struct TargetConfig {
    /// The URL, holding the password given apart from it.
    pub url: String,
    /// PostgreSQL schema that receives the replicated tables.
    pub schema: String,
    /// `[target] lock_timeout_ms`: the longest one DDL statement waits for its lock on a
    /// replicated table (its readers wait behind it as long); then it is retried.
    pub lock_timeout_ms: u64,
    /// `[target] ddl_wait_ms`: how long DDL keeps retrying before `status` says what it
    /// waits for (the initial load's key drop falls back to a keyed load instead).
    pub ddl_wait_ms: u64,
}

/// `[http]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// `[http] addr` / `SLUICE_HTTP_ADDR`: where `run` and `demo` serve /metrics, /healthz,
    /// /readyz and /status. Port 0 picks a free port (logged).
    pub addr: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("source", &self.source)
            .field("target", &self.target)
            .field("pipeline", &self.pipeline)
            .field("pipeline_name", &self.pipeline_name)
            .field("retry", &self.retry)
            .field("verify", &self.verify)
            .field("cluster", &self.cluster)
            .field("tables", &self.tables)
            .field("http", &self.http)
            .finish()
    }
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redact(&self.url))
            .field("safety_lag_ms", &self.safety_lag_ms)
            .field("zero_dates", &self.zero_dates)
            .field("datetime_zone", &self.datetime_zone)
            .field("capture", &self.capture)
            .field("on_binlog_gone", &self.on_binlog_gone)
            .field("server_id", &self.server_id)
            .finish()
    }
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .field("ddl_wait_ms", &self.ddl_wait_ms)
            .finish()
    }
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
            source: SourceConfig {
                url: overrides
                    .source_url
                    .clone()
                    .or(parsed.source.url)
                    .unwrap_or_else(|| DEFAULT_SOURCE_URL.into()),
                safety_lag_ms: parsed.source.safety_lag_ms.unwrap_or(DEFAULT_SAFETY_LAG_MS),
                zero_dates: parsed.source.zero_dates.unwrap_or_default(),
                datetime_zone: parsed.source.datetime_zone,
                capture: parsed.source.capture.unwrap_or_default(),
                on_binlog_gone: parsed.source.on_binlog_gone.unwrap_or_default(),
                server_id: parsed.source.server_id.unwrap_or(0),
                server_id_derived: false,
            },
            target: TargetConfig {
                url: overrides
                    .target_url
                    .clone()
                    .or(parsed.target.url)
                    .unwrap_or_else(|| DEFAULT_TARGET_URL.into()),
                schema: parsed.target.schema.unwrap_or_else(|| "public".into()),
                lock_timeout_ms: parsed.target.lock_timeout_ms.unwrap_or(1000),
                ddl_wait_ms: parsed.target.ddl_wait_ms.unwrap_or(60_000),
            },
            pipeline: parsed.pipeline,
            retry: parsed.retry,
            verify: parsed.verify,
            cluster: parsed.cluster,
            tables: if parsed.tables.is_empty() {
                vec![TableSettings::demo_orders()]
            } else {
                parsed.tables
            },
            http: HttpConfig {
                addr: std::env::var("SLUICE_HTTP_ADDR")
                    .ok()
                    .or(parsed.http.addr)
                    .unwrap_or_else(|| DEFAULT_HTTP_ADDR.into()),
            },
            mask_salt: None,
        };
        if let Some(path) = &settings.pipeline.mask_salt_file {
            let salt = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "[pipeline] mask_salt_file = {path:?} cannot be read: {e}; give a readable file (its bytes key the sha256 masks)"
                ))
            })?;
            if salt.is_empty() {
                return Err(Error::Config(format!(
                    "[pipeline] mask_salt_file = {path:?} is empty: a salt must hold some bytes (e.g. `head -c 32 /dev/urandom > {path}`)"
                )));
            }
            settings.mask_salt = Some(std::sync::Arc::new(salt));
        }
        if parsed.source.server_id == Some(0) {
            return Err(Error::Config(
                "[source] server_id must be 1..4294967295 (0 is no replica id), unique among the source's replicas; leave it out to derive one from the pipeline name".into(),
            ));
        }
        settings.validate()?;
        if let Some((pw, from)) = source_password {
            settings.source.url = with_password(&settings.source.url, &pw, "source", &from)?;
        }
        if let Some((pw, from)) = target_password {
            settings.target.url = with_password(&settings.target.url, &pw, "target", &from)?;
        }
        settings.pipeline_name = match &settings.pipeline.name {
            Some(n) => n.clone(),
            None => format!(
                "{}/{}",
                database_of(&settings.source.url),
                settings.target.schema
            ),
        };
        if settings.source.server_id == 0 {
            settings.source.server_id = default_server_id(&settings.pipeline_name);
            settings.source.server_id_derived = true;
        }
        Ok(settings)
    }

    /// The replica id this process's binlog stream announces: the configured one, or one
    /// derived from the pipeline and this process (`host:pid`), so the members of a group,
    /// each streaming the binlog for its own tables, never share one (the source would cut
    /// one of two replicas with the same id off).
    pub fn replica_id(&self) -> u32 {
        if self.source.server_id_derived {
            default_server_id(&format!("{}/{}", self.pipeline_name, owner_id()))
        } else {
            self.source.server_id
        }
    }

    fn parse_toml(text: &str) -> std::result::Result<File, String> {
        toml::from_str::<File>(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks every value, section by section; the message names the key and the accepted
    /// range.
    pub fn validate(&self) -> Result<()> {
        self.source.validate()?;
        self.target.validate()?;
        self.pipeline.validate()?;
        self.http.validate()?;
        self.retry.validate()?;
        self.verify.validate(&self.pipeline)?;
        self.cluster.validate()?;
        // Every table entry's problems, all at once.
        let mut seen = std::collections::HashSet::new();
        let mut problems = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            problems.extend(t.problems(&format!("tables[{i}]"), self.source.capture));
            if !seen.insert(t.name.as_str()) {
                problems.push(format!(
                    "tables[{i}]: table {:?} is listed twice; list each table once",
                    t.name
                ));
            }
        }
        match problems.len() {
            0 => Ok(()),
            1 => Err(Error::Config(problems.remove(0))),
            n => Err(Error::Config(format!(
                "{n} problems in [[tables]]:\n  - {}",
                problems.join("\n  - ")
            ))),
        }
    }
}

impl SourceConfig {
    pub fn validate(&self) -> Result<()> {
        check_url(
            "source.url / SLUICE_SOURCE_URL / --source",
            &self.url,
            &["mysql", "mariadb"],
        )?;
        in_range("source.safety_lag_ms", self.safety_lag_ms, 0, 86_400_000)?;
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
        Ok(())
    }
}

impl TargetConfig {
    pub fn validate(&self) -> Result<()> {
        check_url(
            "target.url / SLUICE_TARGET_URL / --target",
            &self.url,
            &["postgres", "postgresql"],
        )?;
        if self.schema.is_empty() {
            return Err(Error::Config("target.schema must not be empty".into()));
        }
        in_range("target.lock_timeout_ms", self.lock_timeout_ms, 10, 600_000)?;
        in_range("target.ddl_wait_ms", self.ddl_wait_ms, 0, 86_400_000)
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<()> {
        // IP:port, or a host name and port (resolved when bound: localhost:9731).
        let host_and_port = self.addr.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains(['/', ' ']) && p.parse::<u16>().is_ok()
        });
        if self.addr.parse::<std::net::SocketAddr>().is_err() && !host_and_port {
            return Err(Error::Config(format!(
                "http.addr / SLUICE_HTTP_ADDR {:?} is not an address like 127.0.0.1:9731 or localhost:9731",
                self.addr
            )));
        }
        Ok(())
    }
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
            lock_timeout: std::time::Duration::from_millis(self.target.lock_timeout_ms),
            patience: std::time::Duration::from_millis(self.target.ddl_wait_ms),
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
            url::Url::parse(&s.source.url).unwrap().password(),
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
        assert_eq!(s.source.url, DEFAULT_SOURCE_URL);
        assert_eq!(s.target.url, DEFAULT_TARGET_URL);
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
        assert_eq!(s.source.url, "mysql://b@h:2/y");
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
    fn mapping_options_are_checked_as_the_file_is_read() {
        let refused = |tables: &str, needle: &str| {
            let e = load_str(&format!("[source]\ncapture = \"binlog\"\n{tables}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{tables}: {e}");
        };
        refused(
            "[[tables]]\nname = \"t\"\nmask_columns = { a = \"md5\" }\n",
            "is not a mask",
        );
        refused(
            "[[tables]]\nname = \"t_*\"\ntarget = \"s.t\"\n",
            "not with a pattern",
        );
        refused(
            "[[tables]]\nname = \"t\"\ntarget = \"s.\"\n",
            "schema.table",
        );
        refused(
            "[[tables]]\nname = \"t\"\nexclude_columns = [\"a\"]\nmask_columns = { A = \"null\" }\n",
            "which exclude_columns leaves out",
        );
        refused(
            "[[tables]]\nname = \"t\"\nprimary_key = \"id\"\nmask_columns = { id = \"null\" }\n",
            "a key or cursor column",
        );
        let ok = load_str(
            "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"t_*\"\ntarget = \"s.*\"\n\
             mask_columns = { a = \"constant:n/a\" }\n",
        )
        .unwrap();
        assert_eq!(ok.tables[0].target.as_deref(), Some("s.*"));
        // Every entry's problems at once, each saying where it is.
        let e = load_str(
            "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"a\"\nmask_columns = { m = \"md5\" }\n\
             where = \"region = 'EU' AND\"\n[[tables]]\nname = \"b\"\ntarget = \"s.\"\n",
        )
        .unwrap_err()
        .to_string();
        for said in [
            "3 problems in [[tables]]",
            "tables[0].mask_columns.m (table \"a\") = \"md5\" is not a mask",
            "tables[0].where (table \"a\") = \"region = 'EU' AND\": expected a column, found the end of the expression",
            "tables[1].target (table \"b\")",
        ] {
            assert!(e.contains(said), "{said:?} in {e}");
        }
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
            exclude_columns: Vec::new(),
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
        assert_eq!(s.source.zero_dates, ZeroDates::Null);
        assert!(s.tables[0].tinyint1_as_boolean);
        let s = load_str(
            "[source]\nzero_dates = \"error\"\n[[tables]]\nname = \"a\"\ncursor = \"id\"\ntinyint1_as_boolean = false\n",
        )
        .unwrap();
        assert_eq!(s.source.zero_dates, ZeroDates::Error);
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
        assert_eq!(
            (s.source.capture, s.source.server_id),
            (Capture::Binlog, 4242)
        );
        let zero =
            load_str("[source]\ncapture = \"binlog\"\nserver_id = 0\n[[tables]]\nname = \"a\"\n");
        assert!(zero
            .unwrap_err()
            .to_string()
            .contains("server_id must be 1..4294967295"));
        let err = load_str("[[tables]]\nname = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("tables[0].cursor"), "{err}");
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.source.capture, Capture::Poll);
        assert!(s.source.server_id >= 1_000_000, "{}", s.source.server_id);
        assert_eq!(s.source.server_id, default_server_id("test/public"));
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
