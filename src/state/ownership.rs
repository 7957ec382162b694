//! Table ownership: one process replicates a table of a pipeline into a target at a time,
//! provably.
//!
//! A process owns a table while it holds the table's PostgreSQL session advisory lock
//! (keyed by pipeline and table) and the table's `owner_epoch` is the one it set when it
//! took the lock ([`super::claim`] bumps it). The lock decides who may claim; the epoch
//! fences: every position write checks it, so a process that lost its lock (its session cut
//! by a PostgreSQL restart or a network fault, or a long pause) and was taken over can
//! never write again, even before it notices.
//!
//! [`Ownership::watch`] checks the lock's session every second. When it is gone, it
//! reconnects and takes each lock again: a table whose lock it gets back with its epoch
//! unchanged is still its own; any other table is lost, and is stopped with
//! [`Error::Fenced`].

use std::time::Duration;

use sea_orm::sqlx::{self, PgConnection};
use tracing::{info, warn};

use super::StateKey;
use crate::config::Settings;
use crate::error::{Error, Result, Side};
use crate::retry::{retry, Retrier};
use crate::shutdown::Shutdown;

/// The advisory lock of a table: a 64-bit key from the MD5 of pipeline and table.
pub(crate) const LOCK_KEY: &str =
    "('x' || left(md5('sluice/' || $1 || '/' || $2), 16))::bit(64)::bigint";

/// The call that takes a table's repair lock for the transaction: every batch the writer
/// applies holds it `shared`, a background repair (`verify::check`) exclusively, so a repair
/// sees the target at a committed position and nothing is written under it meanwhile.
pub fn repair_lock(key: &StateKey, shared: bool) -> String {
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    format!(
        "pg_advisory_xact_lock{}(('x' || left(md5('sluice-repair/' || {} || '/' || {}), 16))::bit(64)::bigint)",
        if shared { "_shared" } else { "" },
        lit(&key.pipeline),
        lit(&key.table)
    )
}

/// How often the lock's session is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub use crate::config::owner_id;

/// Takes the table's advisory lock on `conn` if nobody holds it.
pub async fn try_lock(conn: &mut PgConnection, key: &StateKey) -> Result<bool> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_try_advisory_lock({LOCK_KEY})"
    )))
    .bind(&key.pipeline)
    .bind(&key.table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Target, "taking the table's advisory lock", &e))
}

/// Releases a lock taken with [`try_lock`].
pub async fn unlock(conn: &mut PgConnection, key: &StateKey) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_unlock({LOCK_KEY})"
    )))
    .bind(&key.pipeline)
    .bind(&key.table)
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Target, "releasing the table's advisory lock", &e))?;
    Ok(())
}

/// The tables this process owns, and the session holding their locks.
pub struct Ownership {
    conn: Option<PgConnection>,
    keys: Vec<StateKey>,
    epochs: Vec<i64>,
}

impl Ownership {
    /// Takes every table of `tables` for pipeline `settings.pipeline_name` (`run --once`,
    /// `demo`): a table another process owns is refused. A session lost on the way (a
    /// PostgreSQL restart) starts the claim over. Shutdown ends the wait with
    /// [`Error::Shutdown`]. (`run` takes its share instead: [`Ownership::claim_some`].)
    pub async fn claim(
        settings: &Settings,
        tables: &[String],
        shutdown: &Shutdown,
    ) -> Result<Ownership> {
        let keys: Vec<StateKey> = tables
            .iter()
            .map(|t| StateKey::new(&settings.pipeline_name, t))
            .collect();
        let mut policy = Retrier::for_connect(&settings.retry);
        loop {
            let err = match Self::try_claim(settings, &keys, shutdown).await {
                Ok(o) => return Ok(o),
                Err(e) => e,
            };
            match policy.decide(&err, shutdown) {
                crate::retry::Decision::Retry { attempt, delay } => {
                    warn!(attempt, delay_ms = delay.as_millis() as u64, error = %err, "lost the target while claiming tables; starting over");
                    if shutdown.sleep(delay).await {
                        return Err(Error::Shutdown);
                    }
                }
                crate::retry::Decision::Stop if err.is_retryable() && shutdown.requested() => {
                    return Err(Error::Shutdown)
                }
                crate::retry::Decision::Stop => return Err(policy.final_error(err)),
            }
        }
    }

    async fn try_claim(
        settings: &Settings,
        keys: &[StateKey],
        shutdown: &Shutdown,
    ) -> Result<Ownership> {
        let mut conn = connect(settings, shutdown, Retrier::for_connect(&settings.retry)).await?;
        let me = owner_id();
        let mut epochs = Vec::with_capacity(keys.len());
        for key in keys {
            if !try_lock(&mut conn, key).await? {
                return Err(Error::Other(format!(
                    "table {:?} of pipeline {:?} is already being replicated into this target by another sluice process; stop that process first, or start this one with `run`, which shares the tables with it",
                    key.table, key.pipeline
                )));
            }
            epochs.push(super::claim(&mut conn, key, &me).await?);
        }
        Ok(Ownership {
            conn: Some(conn),
            keys: keys.to_vec(),
            epochs,
        })
    }

    /// Takes free tables of `tables`, in the order `order` gives (indexes into `tables`),
    /// until `share` are held; never waits for one. Returns the ownership and the indexes
    /// taken, in `tables`' order. A table another process held before is taken over from
    /// its committed position (logged).
    pub async fn claim_some(
        settings: &Settings,
        tables: &[String],
        order: &[usize],
        share: usize,
        shutdown: &Shutdown,
    ) -> Result<(Ownership, Vec<usize>)> {
        let mut conn = connect(settings, shutdown, Retrier::for_connect(&settings.retry)).await?;
        let me = owner_id();
        let mut taken: Vec<(usize, i64)> = Vec::new();
        for &i in order {
            if taken.len() >= share {
                break;
            }
            let key = StateKey::new(&settings.pipeline_name, &tables[i]);
            if !try_lock(&mut conn, &key).await? {
                continue;
            }
            let before: Option<Option<String>> = sqlx::query_scalar(
                "SELECT owner FROM sluice.replication_state WHERE pipeline = $1 AND table_name = $2",
            )
            .bind(&key.pipeline)
            .bind(&key.table)
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| Error::db(Side::Target, "reading a table's owner", &e))?;
            let epoch = super::claim(&mut conn, &key, &me).await?;
            if let Some(Some(prev)) = before.filter(|p| p.as_deref() != Some(me.as_str())) {
                info!(table = %key.table, from = %prev, epoch, "taking over the table from its committed position");
            }
            taken.push((i, epoch));
        }
        taken.sort_unstable();
        let keys = taken
            .iter()
            .map(|&(i, _)| StateKey::new(&settings.pipeline_name, &tables[i]))
            .collect();
        Ok((
            Ownership {
                conn: Some(conn),
                keys,
                epochs: taken.iter().map(|&(_, e)| e).collect(),
            },
            taken.into_iter().map(|(i, _)| i).collect(),
        ))
    }

    /// The ownership epoch of the `i`th claimed table.
    pub fn epoch(&self, i: usize) -> i64 {
        self.epochs[i]
    }

    /// Watches the lock's session until shutdown (see the module doc). `lost(i, error)` is
    /// called once for each table lost to another process.
    pub async fn watch(
        mut self,
        settings: Settings,
        shutdown: Shutdown,
        lost: impl Fn(usize, Error),
    ) {
        let mut owned = vec![true; self.keys.len()];
        loop {
            if shutdown.sleep(CHECK_EVERY).await || !owned.iter().any(|o| *o) {
                return;
            }
            if let Some(conn) = self.conn.as_mut() {
                let probe = sqlx::query("SELECT 1").execute(&mut *conn);
                if matches!(
                    tokio::time::timeout(Duration::from_secs(5), probe).await,
                    Ok(Ok(_))
                ) {
                    continue;
                }
                warn!(
                    "lost the target session that holds table ownership; taking the tables again"
                );
                self.conn = None;
            }
            // Retried for as long as it takes: the writers fail meanwhile too.
            let mut conn = match connect(&settings, &shutdown, Retrier::new(&settings.retry)).await
            {
                Ok(c) => c,
                Err(_) => return,
            };
            for (i, key) in self.keys.iter().enumerate() {
                if !owned[i] {
                    continue;
                }
                match self.retake(&mut conn, key, self.epochs[i]).await {
                    Ok(true) => {}
                    Ok(false) => {
                        owned[i] = false;
                        lost(
                            i,
                            Error::Fenced {
                                table: key.table.clone(),
                                message: format!(
                                    "lost ownership to another sluice process while the session holding it was cut (this process held epoch {}); it writes nothing more for this table",
                                    self.epochs[i]
                                ),
                            },
                        );
                    }
                    // The new session failed too: try again at the next check.
                    Err(_) => break,
                }
            }
            self.conn = Some(conn);
        }
    }

    /// Takes a table's lock again after a lost session: true when it is still this
    /// process's (nobody took it over meanwhile).
    async fn retake(&self, conn: &mut PgConnection, key: &StateKey, epoch: i64) -> Result<bool> {
        if !try_lock(conn, key).await? {
            return Ok(false);
        }
        if super::epoch(conn, key).await? == Some(epoch) {
            info!(table = %key.table, epoch, "table ownership taken again");
            return Ok(true);
        }
        unlock(conn, key).await?;
        Ok(false)
    }
}

/// Connects to the target for the lock's session, retrying transient failures as `policy`
/// says (or until shutdown).
async fn connect(
    settings: &Settings,
    shutdown: &Shutdown,
    mut policy: Retrier,
) -> Result<PgConnection> {
    retry(
        &mut policy,
        shutdown,
        || crate::conn::target(&settings.target.url, "owner"),
        |attempt, delay, e| {
            warn!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "cannot connect to the target yet; retrying")
        },
    )
    .await
}
