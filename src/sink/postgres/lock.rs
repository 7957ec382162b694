//! DDL on a target people read, without making them wait.
//!
//! PostgreSQL queues every new lock request behind a waiting `ACCESS EXCLUSIVE` one: a DDL
//! statement waiting for a long report blocks every reader that comes after it. So each
//! DDL sluice runs on a replicated table goes through [`ddl`]: inside the caller's
//! transaction, under a savepoint, with `lock_timeout` set to `[target] lock_timeout_ms`
//! (1 s by default). When the lock is not granted in time the statement is rolled back to
//! the savepoint (the transaction's earlier work, such as an index just built, is kept),
//! the sessions holding the table are named in the log (once per wait) and counted in
//! `sluice_ddl_lock_waits_total`, and it is tried again after a backoff with jitter. Readers
//! wait at most the lock timeout, once per attempt.

use std::time::{Duration, Instant};

use rand::Rng;
use sea_orm::sqlx::{self, AssertSqlSafe, PgConnection};
use tracing::{info, warn};

use crate::error::{on_target as tgt, Error, Result, Side};
use crate::telemetry::TableHandle;

/// SQLSTATE: the lock was not granted within `lock_timeout`.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";

pub use crate::config::LockWait;

/// A session holding a lock on the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub pid: i32,
    pub user: String,
    pub application: String,
    /// How long its transaction has been open, in seconds.
    pub seconds: f64,
    pub mode: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (user {}, application {:?}, transaction open {:.0} s, {})",
            self.pid, self.user, self.application, self.seconds, self.mode
        )
    }
}

/// The outcome of [`ddl`].
#[derive(Debug)]
pub enum Ddl {
    Done,
    /// Not granted within the patience; the transaction is as before the call.
    Waited(Vec<Holder>),
}

/// [`ddl`] until its lock is granted, however long that takes (a statement that must run,
/// at start-up or on a table whose writer this is).
pub async fn ddl_until_done(
    tx: &mut PgConnection,
    table: &str,
    sql: &str,
    what: &str,
    wait: LockWait,
    counted: Option<&TableHandle>,
) -> Result<()> {
    while let Ddl::Waited(_) = ddl(tx, table, sql, what, wait, counted).await? {}
    Ok(())
}

/// Runs the DDL statement `sql` on `table` (a qualified name) in the open transaction
/// `tx`, waiting for its lock as the module says. `what` names it in the log; each wait is
/// counted on `counted`, the table's handle, where the caller has one.
pub async fn ddl(
    tx: &mut PgConnection,
    table: &str,
    sql: &str,
    what: &str,
    wait: LockWait,
    counted: Option<&TableHandle>,
) -> Result<Ddl> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        raw(tx, "SAVEPOINT sluice_ddl").await?;
        raw(
            tx,
            &format!(
                "SET LOCAL lock_timeout = {}",
                wait.lock_timeout.as_millis().max(1)
            ),
        )
        .await?;
        let r = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await;
        let e = match r {
            Ok(_) => {
                raw(tx, "SET LOCAL lock_timeout = DEFAULT").await?;
                raw(tx, "RELEASE SAVEPOINT sluice_ddl").await?;
                if attempt > 1 {
                    info!(
                        table,
                        what,
                        waited_s = format!("{:.1}", start.elapsed().as_secs_f64()),
                        "the lock was granted"
                    );
                }
                return Ok(Ddl::Done);
            }
            Err(e) => e,
        };
        let timed_out = matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some(LOCK_NOT_AVAILABLE));
        if !timed_out {
            return Err(Error::db(Side::Target, format!("{what} on {table}"), &e));
        }
        raw(tx, "ROLLBACK TO SAVEPOINT sluice_ddl").await?;
        raw(tx, "RELEASE SAVEPOINT sluice_ddl").await?;
        let holders = holders(tx, table).await.unwrap_or_default();
        if let Some(h) = counted {
            h.ddl_lock_wait();
        }
        if attempt == 1 {
            let who: Vec<String> = holders.iter().map(Holder::to_string).collect();
            warn!(
                table,
                what,
                lock_timeout_ms = wait.lock_timeout.as_millis() as u64,
                held_by = %who.join("; "),
                "waiting for a lock other sessions hold on the table; retrying with a short lock timeout so that its readers are not queued behind sluice"
            );
        }
        if start.elapsed() >= wait.patience {
            return Ok(Ddl::Waited(holders));
        }
        // Backoff with jitter, from the lock timeout up to 10 times it.
        let base = wait.lock_timeout.as_millis() as u64;
        let step = base.saturating_mul(u64::from(attempt.min(10)));
        let delay = rand::thread_rng().gen_range(base / 2..=step.max(base / 2 + 1));
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
}

/// The sessions (other than this one) holding a granted lock on `table`.
pub async fn holders(conn: &mut PgConnection, table: &str) -> Result<Vec<Holder>> {
    type Row = (i32, Option<String>, Option<String>, Option<f64>, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.pid, a.usename::text, a.application_name, \
                EXTRACT(EPOCH FROM now() - a.xact_start)::float8, string_agg(DISTINCT l.mode, ', ') \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.relation = $1::text::regclass AND l.granted AND l.pid <> pg_backend_pid() \
         GROUP BY 1, 2, 3, 4 ORDER BY 4 DESC NULLS LAST",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(tgt(format!("reading who holds {table}")))?;
    Ok(rows
        .into_iter()
        .map(|(pid, user, application, seconds, mode)| Holder {
            pid,
            user: user.unwrap_or_default(),
            application: application.unwrap_or_default(),
            seconds: seconds.unwrap_or(0.0),
            mode,
        })
        .collect())
}

async fn raw(tx: &mut PgConnection, sql: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await
        .map_err(tgt(sql.to_string()))?;
    Ok(())
}
