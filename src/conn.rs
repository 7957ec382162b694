//! Connections to both sides: opening one (an error names host:port and how to fix it,
//! never the password; whether it is encrypted is noted, see [`crate::tls`]), and the
//! helpers' pair of connections.
//!
//! The helpers' connections: readiness probes, `/status`, the progress estimate, recording a
//! table's error, the binlog distance. They share one connection to each side (the one
//! `[pipeline] max_*_connections` keeps for them), held by one [`SharedHelpers`] handle per process (passed to whoever needs it) and kept open between
//! uses, so that a scraper or a probe polling `/readyz` costs the source a `SELECT 1`, not a
//! connection.
//!
//! A connection is reused on the thread that opened it (each actix arbiter runs its own
//! tokio runtime, which drives the connection's socket); a use from another thread closes
//! it and opens one there. A connection that fails its ping is replaced.

use std::str::FromStr;
use std::thread::ThreadId;

use sea_orm::sqlx::mysql::MySqlConnectOptions;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::{self, ConnectOptions, Connection, MySqlConnection, PgConnection};
use tokio::sync::Mutex;
use tracing::debug;

use crate::error::{Error, Result, Side};
use crate::redact::redact;
use crate::urls::host_port;

/// Opens one connection to the source. The driver sets the session time zone to UTC,
/// which is what TIMESTAMP columns are read in.
pub async fn source(url: &str) -> Result<MySqlConnection> {
    // sqlx's own statement logs (every statement at debug, and a slow one, such as a
    // verify's checksum of a large table, at warn with its whole text) are left out: sluice
    // logs what it does itself.
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("source URL {} is not valid: {e}", redact(url))))?
        .disable_statement_logging();
    let mut conn = opts.connect().await.map_err(|e| {
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
    })?;
    let cipher: Option<(String, String)> = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| Error::db(Side::Source, "reading the session's TLS state", &e))?;
    let encrypted = cipher.is_some_and(|(_, c)| !c.is_empty());
    crate::tls::note(Side::Source, url, "reader", encrypted);
    Ok(conn)
}

/// Opens one connection to the target, named `sluice <role>` in `pg_stat_activity`.
pub async fn target(url: &str, role: &str) -> Result<PgConnection> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("target URL {} is not valid: {e}", redact(url))))?
        .application_name(&format!("sluice {role}"))
        .disable_statement_logging();
    let mut conn = opts.connect().await.map_err(|e| {
        let mut err = Error::db(
            Side::Target,
            format!("cannot connect to {} (URL {})", host_port(url), redact(url)),
            &e,
        );
        if let Error::Database { message, .. } = &mut err {
            message.push_str(
                "; check that PostgreSQL is running there and the URL (--target, SLUICE_TARGET_URL, [target] url) is right",
            );
        }
        err
    })?;
    let encrypted: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| Error::db(Side::Target, "reading the session's TLS state", &e))?;
    crate::tls::note(Side::Target, url, role, encrypted.unwrap_or(false));
    Ok(conn)
}

/// The helpers' connections, shared by handle: `run` and `demo` make one and pass it to
/// the HTTP surface, the progress reporter, the supervisor and the sinks. Held locked while
/// a helper talks to the databases: one helper at a time.
#[derive(Clone, Default)]
pub struct SharedHelpers(std::sync::Arc<Mutex<Helpers>>);

impl SharedHelpers {
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Helpers> {
        self.0.lock().await
    }
}

impl std::fmt::Debug for SharedHelpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedHelpers")
    }
}

/// One connection to each side, opened when first needed.
#[derive(Default)]
pub struct Helpers {
    source: Option<(ThreadId, MySqlConnection)>,
    target: Option<(ThreadId, PgConnection)>,
}

impl Helpers {
    pub const fn new() -> Helpers {
        Helpers {
            source: None,
            target: None,
        }
    }

    /// The connection to the source, open and answering.
    pub async fn source(&mut self, url: &str) -> Result<&mut MySqlConnection> {
        open(&mut self.source, || source(url)).await
    }

    /// The connection to the target (`sluice status` in `pg_stat_activity`).
    pub async fn target(&mut self, url: &str) -> Result<&mut PgConnection> {
        open(&mut self.target, || helper_target(url)).await
    }

    /// Both connections, opened side by side.
    pub async fn both(
        &mut self,
        source_url: &str,
        target_url: &str,
    ) -> (Result<&mut MySqlConnection>, Result<&mut PgConnection>) {
        let Helpers {
            source: to_source,
            target: to_target,
        } = self;
        tokio::join!(
            open(to_source, || source(source_url)),
            open(to_target, || helper_target(target_url)),
        )
    }

    /// Forgets the connections (after an error that may have left one unusable).
    pub fn reset(&mut self) {
        self.source = None;
        self.target = None;
    }
}

/// The longest one helper statement runs on the target. Helpers share one connection, one at
/// a time: a statement waiting on a lock (a migration holding `sluice.replication_state`)
/// must not hold `/status`, error records and state loads behind it for as long as the lock.
/// (`SET statement_timeout = '5s'` in [`helper_target`].)
pub const HELPER_STATEMENT_TIMEOUT_S: u64 = 5;

/// A helper's connection to the target, with its statement timeout.
async fn helper_target(url: &str) -> Result<PgConnection> {
    let mut conn = target(url, "status").await?;
    sqlx::raw_sql("SET statement_timeout = '5s'")
        .execute(&mut conn)
        .await
        .map_err(|e| {
            Error::db(
                Side::Target,
                "setting the helper session's statement_timeout",
                &e,
            )
        })?;
    Ok(conn)
}

/// The slot's connection if it was opened on this thread and answers a ping; else a new one.
async fn open<C, F, Fut>(slot: &mut Option<(ThreadId, C)>, connect: F) -> Result<&mut C>
where
    C: Connection,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<C>>,
{
    let here = std::thread::current().id();
    let reason = match slot.take() {
        None => "first use",
        Some((at, _)) if at != here => "used from another thread",
        Some((at, mut conn)) => match conn.ping().await {
            Ok(()) => return Ok(&mut slot.insert((at, conn)).1),
            Err(e) => {
                debug!(error = %e, "a helper connection failed its ping");
                "failed its ping"
            }
        },
    };
    debug!(reason, connection = std::any::type_name::<C>(), thread = ?here, "opening a helper connection");
    let conn = connect().await?;
    Ok(&mut slot.insert((here, conn)).1)
}
