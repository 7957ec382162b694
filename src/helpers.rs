//! The helpers' connections: readiness probes, `/status`, the progress estimate, recording a
//! table's error, the binlog distance. They share one connection to each side (the one
//! `[pipeline] max_*_connections` keeps for them), held in [`HELPERS`] and kept open between
//! uses, so that a scraper or a probe polling `/readyz` costs the source a `SELECT 1`, not a
//! connection.
//!
//! A connection is reused on the thread that opened it (each actix arbiter runs its own
//! tokio runtime, which drives the connection's socket); a use from another thread closes
//! it and opens one there. A connection that fails its ping is replaced.

use std::thread::ThreadId;

use sea_orm::sqlx::{Connection, MySqlConnection, PgConnection};
use tokio::sync::Mutex;
use tracing::debug;

use crate::error::Result;

/// Held while a helper talks to the databases: one helper at a time.
pub static HELPERS: Mutex<Helpers> = Mutex::const_new(Helpers::new());

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
        open(&mut self.source, || crate::source::mysql::connect(url)).await
    }

    /// The connection to the target (`sluice status` in `pg_stat_activity`).
    pub async fn target(&mut self, url: &str) -> Result<&mut PgConnection> {
        open(&mut self.target, || {
            crate::sink::postgres::connect(url, "status")
        })
        .await
    }

    /// Both connections, opened side by side.
    pub async fn both(
        &mut self,
        source_url: &str,
        target_url: &str,
    ) -> (Result<&mut MySqlConnection>, Result<&mut PgConnection>) {
        let Helpers { source, target } = self;
        tokio::join!(
            open(source, || crate::source::mysql::connect(source_url)),
            open(target, || crate::sink::postgres::connect(
                target_url, "status"
            )),
        )
    }

    /// Forgets the connections (after an error that may have left one unusable).
    pub fn reset(&mut self) {
        self.source = None;
        self.target = None;
    }
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
