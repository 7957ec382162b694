//! MySQL/MariaDB: connections, the server's flavour, table introspection
//! ([`introspect`]) and how rows are selected and decoded ([`read`]).

pub mod introspect;
pub mod read;

use std::str::FromStr;

use sea_orm::sqlx::mysql::MySqlConnectOptions;
use sea_orm::sqlx::{self, ConnectOptions, MySqlConnection};

use crate::config::{host_port, redact};
use crate::error::{Error, Result, Side};

pub use introspect::{introspect, MapOptions, SourceTable};
pub use read::ReadSpec;

/// Opens one connection to the source. The driver sets the session time zone to UTC,
/// which is what TIMESTAMP columns are read in.
pub async fn connect(url: &str) -> Result<MySqlConnection> {
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("source URL {} is not valid: {e}", redact(url))))?;
    opts.connect().await.map_err(|e| {
        let mut err = Error::db(
            Side::Source,
            format!("cannot connect to {} (URL {})", host_port(url), redact(url)),
            &e,
        );
        if let Error::Database { message, .. } = &mut err {
            message.push_str(
                "; check that MySQL/MariaDB is running there and the URL (--source, SLUICE_SOURCE_URL, [source] url) is right",
            );
        }
        err
    })
}

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

/// A configured table's columns and primary key (the `primary_key` setting, or the
/// table's own; refused without either).
pub async fn introspect_keyed(
    conn: &mut MySqlConnection,
    t: &crate::config::TableSettings,
) -> Result<(SourceTable, Vec<usize>)> {
    let source = introspect(
        conn,
        &t.name,
        MapOptions {
            tinyint1_as_boolean: t.tinyint1_as_boolean,
        },
    )
    .await?;
    let configured = t.primary_key.as_ref().map(|p| p.to_vec());
    let key = source.resolve_key(configured.as_deref())?;
    Ok((source, key))
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
