//! MySQL/MariaDB: connections, the server's flavour, table introspection
//! ([`introspect`]) and how rows are selected and decoded ([`read`]).

pub mod introspect;
pub mod read;

use sea_orm::sqlx::{self, AssertSqlSafe, MySqlConnection};

use crate::error::{Error, Result, Side};
use crate::redact::redact;

pub use introspect::{introspect, MapOptions, SourceTable};
pub use read::ReadSpec;

pub use crate::conn::source as connect;

/// The options of the binlog stream's connection (mysql_async) from the source URL as sqlx
/// reads it: host, port or `socket=`, user, password, and TLS as `ssl-mode=` asks
/// (`DISABLED`, `PREFERRED` (the default), `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`), with
/// `ssl-ca=`, `ssl-cert=` and `ssl-key=`. Certificates are checked against the system's
/// store (or `ssl-ca=` alone), as sqlx does. The second options, for `PREFERRED`, are
/// plaintext: what to use when the server offers no TLS.
pub fn binlog_opts(url: &str) -> Result<(mysql_async::Opts, Option<mysql_async::Opts>)> {
    use mysql_async::{ClientIdentity, OptsBuilder, SslOpts};
    let bad = |what: String| Error::Config(format!("source URL {}: {what}", redact(url)));
    let u = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let host = u
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut b = OptsBuilder::default()
        .ip_or_hostname(decode(host))
        .tcp_port(u.port().unwrap_or(3306))
        .user(Some(decode(u.username())))
        .pass(u.password().map(decode))
        .db_name(Some(decode(u.path().trim_start_matches('/'))));
    let (mut mode, mut ca, mut cert, mut key) = ("preferred".to_string(), None, None, None);
    for (k, v) in u.query_pairs() {
        match &*k {
            "sslmode" | "ssl-mode" => mode = v.to_ascii_lowercase(),
            "sslca" | "ssl-ca" => ca = Some(std::path::PathBuf::from(&*v)),
            "sslcert" | "ssl-cert" => cert = Some(std::path::PathBuf::from(&*v)),
            "sslkey" | "ssl-key" => key = Some(std::path::PathBuf::from(&*v)),
            "socket" => b = b.socket(Some(v.into_owned())),
            _ => {}
        }
    }
    let plain = b.clone();
    let mut ssl = SslOpts::default();
    match &ca {
        Some(ca) => {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true)
        }
        None => {
            if let Some(store) = SYSTEM_CA_BUNDLES
                .iter()
                .map(std::path::Path::new)
                .find(|p| p.exists())
            {
                ssl = ssl
                    .with_root_certs(vec![store.to_path_buf().into()])
                    .with_disable_built_in_roots(true);
            }
        }
    }
    match (cert, key) {
        (Some(c), Some(k)) => {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(c.into(), k.into())))
        }
        (None, None) => {}
        _ => return Err(bad("ssl-cert and ssl-key go together".into())),
    }
    let ssl = match mode.as_str() {
        "disabled" => return Ok((plain.into(), None)),
        "preferred" => {
            return Ok((
                b.ssl_opts(Some(ssl.with_danger_accept_invalid_certs(true))).into(),
                Some(plain.into()),
            ))
        }
        "required" => ssl.with_danger_accept_invalid_certs(true),
        "verify_ca" => ssl.with_danger_skip_domain_validation(true),
        "verify_identity" => ssl,
        other => {
            return Err(bad(format!(
                "ssl-mode={other:?} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
            )))
        }
    };
    Ok((b.ssl_opts(Some(ssl)).into(), None))
}

/// Statements that stamp no rows, by their first word (after spaces, parentheses and
/// `/* … */` comments; case aside): reads (`SELECT`, `DO`, …), and schema changes and maintenance, which may
/// run for hours. Anything else (INSERT, UPDATE, REPLACE, LOAD DATA, CALL, a statement
/// this does not know) counts as a writer: holding reads back for it costs lag, never rows.
/// Written for both MariaDB's PCRE and MySQL 8's ICU expressions.
const NON_WRITING: &str = "(?i)^([[:space:](]|/[*]([^*]|[*]+[^*/])*[*]+/)*\
(SELECT|DO|SHOW|EXPLAIN|DESCRIBE|DESC|HELP|ALTER|CREATE|DROP|RENAME|TRUNCATE|OPTIMIZE|ANALYZE|CHECK|CHECKSUM|REPAIR|FLUSH|BACKUP|KILL|GRANT|REVOKE)\
([^a-z0-9_]|$)";

/// The zone DATETIME cursors are written in, and its offset from UTC now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// As the server's `CONVERT_TZ` takes it: `SYSTEM`, `+02:00`, `Europe/Berlin`.
    pub name: String,
    /// Local time minus UTC, now, in microseconds.
    pub offset_us: i64,
}

impl Zone {
    pub const UTC: &str = "+00:00";

    /// SQL for the current time in this zone, to compare a DATETIME cursor with.
    pub fn now_sql(&self) -> String {
        format!("CONVERT_TZ(UTC_TIMESTAMP(6), '+00:00', '{}')", self.name)
    }

    /// The clock a time cursor is compared with, as SQL, and the zone it is in: this zone's
    /// for a DATETIME (`local`: local time as written), UTC for a TIMESTAMP (read in the
    /// session's zone, UTC).
    pub fn clock_sql(&self, local: bool) -> (String, &str) {
        if local {
            (self.now_sql(), self.name.as_str())
        } else {
            ("UTC_TIMESTAMP(6)".to_string(), Zone::UTC)
        }
    }

    /// The start of the oldest statement still running on the server that may write rows,
    /// or the clock (see [`Zone::clock_sql`]) when none runs, as SQL. A statement stamps
    /// its rows (`NOW(6)`) as it starts, and may put them in the table's index much later:
    /// waiting for a metadata lock behind a schema change, for a row or user lock, or busy
    /// reading first (`INSERT … SELECT`). Until then no lock shows its rows, so reads stay
    /// below its start. Reads (`SELECT`, `SHOW`, …) and schema changes (which copy rows but
    /// stamp none) are left out, so a long report or `ALTER TABLE` holds nothing back.
    /// Seeing other users' statements needs the PROCESS privilege; without it only the
    /// safety lag covers them. MariaDB gives each statement's age in microseconds
    /// (`TIME_MS`); MySQL in whole seconds (`TIME`), so a second more is taken there.
    pub fn statements_sql(&self, local: bool, mariadb: bool) -> String {
        let (now, _) = self.clock_sql(local);
        let age = if mariadb {
            "CEIL(COALESCE(MAX(TIME_MS), 0) * 1000) MICROSECOND"
        } else {
            "COALESCE(MAX(TIME) + 1, 0) SECOND"
        };
        format!(
            "(SELECT {now} - INTERVAL {age} FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND COMMAND IN ('Query', 'Execute') \
             AND (INFO IS NULL OR INFO NOT REGEXP '{NON_WRITING}'))"
        )
    }

    /// The read horizon, as SQL: the start of the oldest statement that may write
    /// ([`Zone::statements_sql`]), or the start of the oldest open InnoDB transaction less
    /// a second (`trx_started` holds whole seconds, in the server's system zone), whichever
    /// is earlier, less `lag_us`. Needs the PROCESS privilege.
    pub fn horizon_sql(&self, local: bool, mariadb: bool, lag_us: u64) -> String {
        let (now, zone) = self.clock_sql(local);
        let statements = self.statements_sql(local, mariadb);
        format!(
            "(SELECT LEAST({statements}, COALESCE(CONVERT_TZ(MIN(trx_started), 'SYSTEM', '{zone}'), {now}) - INTERVAL 1 SECOND) \
             - INTERVAL {lag_us} MICROSECOND FROM information_schema.INNODB_TRX)"
        )
    }

    /// A local time in this zone as UTC, by the current offset.
    pub fn to_utc(&self, local: chrono::NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
        (local - chrono::Duration::microseconds(self.offset_us)).and_utc()
    }
}

/// The zone DATETIME cursors are compared in: `configured` (`[source] datetime_zone`), else
/// the server's global time zone. A zone the server cannot convert to (a name without the
/// time zone tables) is a configuration error saying what to do.
pub async fn resolve_zone(conn: &mut MySqlConnection, configured: Option<&str>) -> Result<Zone> {
    // One query, looked at every second by a poller: the zone (the configured one, or the
    // server's global one) and its offset now.
    let (name, offset): (String, Option<i64>) = sqlx::query_as(
        "SELECT z, CAST(TIMESTAMPDIFF(MICROSECOND, t, CONVERT_TZ(t, '+00:00', z)) AS SIGNED) \
         FROM (SELECT CAST(COALESCE(?, @@global.time_zone) AS CHAR) AS z, UTC_TIMESTAMP(6) AS t) n",
    )
    .bind(configured)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, "reading the time zone and its offset", &e))?;
    // Names reach SQL as literals: only the characters zones are made of.
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+-:/_".contains(c))
    {
        return Err(Error::Config(format!(
            "the source's time zone {name:?} is not one sluice can use; set [source] datetime_zone"
        )));
    }
    let offset_us = offset.ok_or_else(|| {
        Error::Config(format!(
            "time zone {name:?} ({}) is unknown to the source server: CONVERT_TZ gives NULL without its time zone tables; load them (mysql_tzinfo_to_sql /usr/share/zoneinfo | mariadb mysql) or set [source] datetime_zone to an offset such as \"+02:00\"",
            if configured.is_some() { "[source] datetime_zone" } else { "the server's @@global.time_zone" }
        ))
    })?;
    Ok(Zone { name, offset_us })
}

/// Rows of a table whose time cursor is ahead of the clock it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ahead {
    /// How many rows have a cursor value past the clock (they wait for it).
    pub rows: u64,
    /// How far the newest of them is ahead, in seconds (0 when none).
    pub newest_s: i64,
}

/// The rows of `table` whose time column `column` is ahead of the clock it is compared
/// with: the clock in `zone` for a DATETIME (`local`), UTC for a TIMESTAMP. One range read
/// of the column's index.
pub async fn cursor_ahead(
    conn: &mut MySqlConnection,
    table: &str,
    column: &str,
    local: bool,
    zone: &Zone,
) -> std::result::Result<Ahead, sqlx::Error> {
    let (now, _) = zone.clock_sql(local);
    let c = quote(column);
    let sql = format!(
        "SELECT CAST(COUNT(*) AS SIGNED), CAST(COALESCE(TIMESTAMPDIFF(SECOND, {now}, MAX({c})), 0) AS SIGNED) \
         FROM {} WHERE {c} > {now}",
        quote(table)
    );
    let (rows, newest_s): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?;
    Ok(Ahead {
        rows: rows.max(0) as u64,
        newest_s,
    })
}

/// Where Linux distributions keep the system's trusted CAs, as one file.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Which server sluice talks to: the SQL it may use depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    pub mariadb: bool,
    pub major: u32,
    pub minor: u32,
}

impl Flavor {
    /// Parses `SELECT VERSION()`: `10.11.9-MariaDB-0+deb12u1`, `8.4.3`, `8.0.36-log`.
    pub fn parse(version: &str) -> Flavor {
        let mut nums = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        Flavor {
            mariadb: version.to_ascii_lowercase().contains("mariadb"),
            major: nums.next().unwrap_or(0),
            minor: nums.next().unwrap_or(0),
        }
    }

    /// Asks the server.
    pub async fn detect(conn: &mut MySqlConnection) -> Result<Flavor> {
        let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Source, "asking the server's version", &e))?;
        let f = Flavor::parse(&version);
        if !f.mariadb && f.major < 8 {
            return Err(Error::Config(format!(
                "the source is MySQL {version}; sluice needs MySQL 8.0 or later, or MariaDB 10.3 or later (it reads with FOR SHARE NOWAIT)"
            )));
        }
        if f.mariadb && (f.major, f.minor) < (10, 3) {
            return Err(Error::Config(format!(
                "the source is MariaDB {version}; sluice needs MariaDB 10.3 or later (it reads with LOCK IN SHARE MODE NOWAIT)"
            )));
        }
        Ok(f)
    }

    /// The clause that ends a shared-lock read which gives up at once on a locked row.
    /// MariaDB has no `FOR SHARE`; MySQL 8's grammar takes `NOWAIT` only after `FOR SHARE`.
    pub fn share_nowait(self) -> &'static str {
        if self.mariadb {
            "LOCK IN SHARE MODE NOWAIT"
        } else {
            "FOR SHARE NOWAIT"
        }
    }
}

/// Quotes a MySQL identifier: backticks, with embedded backticks doubled.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// What InnoDB's statistics say of a table (`information_schema.TABLES`): free to ask, and
/// close enough to decide how to load a backlog and how many rows a page can hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Estimated rows.
    pub rows: u64,
    /// Average bytes per row on disk, off-page BLOB and TEXT data included.
    pub avg_row_bytes: u64,
}

/// A table's definition as one string (columns with their types, nullability and defaults,
/// then its indexes, the primary key among them), to notice a schema change with one cheap query; `None` when the
/// table no longer exists.
pub async fn shape_fingerprint(conn: &mut MySqlConnection, table: &str) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT CAST(CONCAT( \
           (SELECT GROUP_CONCAT(COLUMN_NAME, ' ', COLUMN_TYPE, ' ', IS_NULLABLE, ' ', \
                   IFNULL(COLUMN_DEFAULT, '-') ORDER BY ORDINAL_POSITION SEPARATOR '\n') \
              FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?), \
           '\nkey ', \
           IFNULL((SELECT GROUP_CONCAT(INDEX_NAME, ' ', NON_UNIQUE, ' ', COLUMN_NAME, ' ', \
                   IFNULL(SUB_PART, '-') ORDER BY INDEX_NAME, SEQ_IN_INDEX) \
              FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
               AND TABLE_NAME = ?), '')) AS CHAR)",
    )
    .bind(table)
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        Error::db(
            Side::Source,
            format!("reading the definition of table {table:?}"),
            &e,
        )
    })
}

/// The source database's base tables (not views), by name.
pub async fn base_tables(conn: &mut MySqlConnection) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, "listing the source's tables", &e))
}

/// The configured tables with their patterns expanded against `existing` (the source's
/// tables): each pattern entry becomes one entry per table it takes that no earlier entry
/// named, with the pattern's settings (marked `from_pattern`).
pub fn expand_tables(
    configured: &[crate::config::TableSettings],
    existing: &[String],
) -> Vec<crate::config::TableSettings> {
    let explicit: Vec<&str> = configured
        .iter()
        .filter(|t| !t.is_pattern())
        .map(|t| t.name.as_str())
        .collect();
    let mut out: Vec<crate::config::TableSettings> = Vec::new();
    for t in configured {
        if !t.is_pattern() {
            out.push(t.clone());
            continue;
        }
        for name in existing.iter().filter(|n| t.takes(n)) {
            if explicit.contains(&name.as_str()) || out.iter().any(|o| o.name == *name) {
                continue;
            }
            out.push(crate::config::TableSettings {
                name: name.clone(),
                exclude: Vec::new(),
                from_pattern: true,
                ..t.clone()
            });
        }
    }
    out
}

/// The configured tables, their patterns expanded against the source's tables now (see
/// [`expand_tables`]), and the source's tables (empty when no entry is a pattern: nothing is
/// asked of the source then).
pub async fn expand_on_source(
    conn: &mut MySqlConnection,
    configured: &[crate::config::TableSettings],
) -> Result<(Vec<crate::config::TableSettings>, Vec<String>)> {
    if !configured.iter().any(|t| t.is_pattern()) {
        return Ok((configured.to_vec(), Vec::new()));
    }
    let existing = base_tables(conn).await?;
    Ok((expand_tables(configured, &existing), existing))
}

/// The error a table that disappeared from the source stops with.
pub fn table_gone(table: &str) -> Error {
    Error::TableGone(table.to_string())
}

pub async fn table_stats(conn: &mut MySqlConnection, table: &str) -> Result<TableStats> {
    let row: Option<(Option<u64>, Option<u64>)> = sqlx::query_as(
        "SELECT CAST(TABLE_ROWS AS UNSIGNED), CAST(AVG_ROW_LENGTH AS UNSIGNED) \
         FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| {
        Error::db(
            Side::Source,
            format!("reading the statistics of {table:?}"),
            &e,
        )
    })?;
    let (rows, avg) = row.unwrap_or_default();
    Ok(TableStats {
        rows: rows.unwrap_or(0),
        avg_row_bytes: avg.unwrap_or(0),
    })
}

/// The number of rows in a table as InnoDB estimates it.
pub async fn estimate_rows(conn: &mut MySqlConnection, table: &str) -> Result<u64> {
    Ok(table_stats(conn, table).await?.rows)
}

/// Tables whose statistics say they hold fewer rows than this are counted exactly.
pub const COUNT_BELOW: u64 = 100_000;

/// The rows of a table, for progress: counted when InnoDB's estimate is under
/// [`COUNT_BELOW`], else that estimate (a count would scan a large table). `None` when the
/// server could not say.
pub async fn rows_for_progress(conn: &mut MySqlConnection, table: &str) -> Option<u64> {
    let estimate = estimate_rows(conn, table).await.unwrap_or(0);
    if estimate >= COUNT_BELOW {
        return Some(estimate);
    }
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM {}",
        quote(table)
    )))
    .fetch_one(&mut *conn)
    .await
    .ok()
    .map(|n| n.max(0) as u64)
}

/// A configured table's columns and primary key (the `primary_key` setting, or the
/// table's own; refused without either), its `exclude_columns` left out. `at_start`: an
/// excluded name the table lacks is an error (a misspelt name would let the column through);
/// while following a change of the table's shape it is not (the column was dropped).
pub async fn introspect_keyed(
    conn: &mut MySqlConnection,
    t: &crate::config::TableSettings,
    at_start: bool,
) -> Result<(SourceTable, Vec<usize>)> {
    let exclude = introspect::Exclude {
        columns: &t.exclude_columns,
        strict: at_start && !t.from_pattern && !t.is_pattern(),
    };
    let source = introspect(
        conn,
        &t.name,
        MapOptions {
            tinyint1_as_boolean: t.tinyint1_as_boolean,
        },
        exclude,
    )
    .await?;
    let configured = t.primary_key.as_ref().map(|p| p.to_vec());
    if configured.is_none() {
        if let Some(k) = source.primary_key.iter().find(|k| exclude.has(k)) {
            return Err(Error::Schema(format!(
                "table {:?}: exclude_columns names {k:?}, which is in the table's primary key: the key is needed to replicate the table; remove it from exclude_columns",
                t.name
            )));
        }
    }
    let key = source.resolve_key(configured.as_deref())?;
    Ok((source, key))
}

/// A change of a table's shape in which a column `exclude_columns` left out went while the
/// table gained columns: if one of them is that column renamed (`renames`: those its ALTER
/// statements named, when known), it would land on the target, unexcluded. The table stops
/// instead, naming both, until the configuration names the column as it is now.
/// `before`, `now`: the excluded columns the table had in the old shape and has in the new;
/// `old`, `new`: the shapes (the excluded columns left out).
pub fn excluded_renamed(
    before: &[String],
    now: &[String],
    old: &crate::model::TableModel,
    new: &crate::model::TableModel,
    renames: &[(String, String)],
) -> Option<Error> {
    let gone: Vec<&String> = before.iter().filter(|b| !now.contains(b)).collect();
    if gone.is_empty() {
        return None;
    }
    let named = renames
        .iter()
        .find(|(from, to)| gone.contains(&from) && new.column(to).is_some());
    let came: Vec<&str> = new
        .columns
        .iter()
        .filter(|c| old.column(&c.name).is_none() && c.renamed_from.is_none())
        .map(|c| c.name.as_str())
        .collect();
    let (what, to) = match named {
        Some((from, to)) => (format!("renamed {from:?} to {to:?}"), to.clone()),
        None if !came.is_empty() => (
            format!(
                "dropped {} and gained {} in one change, which may be a rename",
                gone.iter()
                    .map(|g| format!("{g:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                came.iter()
                    .map(|c| format!("{c:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            came[0].to_string(),
        ),
        None => return None,
    };
    Some(Error::Schema(format!(
        "table {:?}: the source {what}; exclude_columns names the old name, so the column would now reach the target. The table stops here (the others go on), before any of its values is written. To go on: name {to:?} in exclude_columns (a column that is really new: remove the old name instead), then restart sluice; the table resumes where it stopped",
        new.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours_pick_their_locking_clause() {
        let m = Flavor::parse("10.11.9-MariaDB-0+deb12u1-log");
        assert!(m.mariadb && m.major == 10 && m.minor == 11);
        assert_eq!(m.share_nowait(), "LOCK IN SHARE MODE NOWAIT");
        let my = Flavor::parse("8.4.3");
        assert!(!my.mariadb && my.major == 8 && my.minor == 4);
        assert_eq!(my.share_nowait(), "FOR SHARE NOWAIT");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("we`ird; x"), "`we``ird; x`");
    }
}
