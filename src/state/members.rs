//! Several `run` processes of one pipeline share its tables: each is a **member**, a row of
//! `sluice.members` on the target that it refreshes every second (its heartbeat, through a
//! connection of its own), naming the PostgreSQL session it heartbeats through and the tables
//! it holds.
//!
//! A member is **live** while its heartbeat is younger than `[cluster] member_timeout_ms` and
//! its session exists: a process killed outright drops out at once (PostgreSQL ends its
//! sessions, and with them its table locks), one that hangs after the timeout. Each live
//! member's **fair share** is the tables divided by the live members, rounded up. Who may
//! write a table is still decided by the table's lock and fenced by its epoch
//! ([`super::ownership`]); membership only decides how many tables each member reaches for,
//! and in which order ([`preference`]: rendezvous hashing, so members prefer different tables
//! and a table's preferred member changes only when members come or go).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sqlx::{self, PgConnection};
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, Result, Side};
use crate::shutdown::Shutdown;

/// How often a member refreshes its row.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// One member, as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Member {
    /// `host:pid`, as `replication_state.owner` names a table's owner.
    pub member: String,
    pub host: String,
    /// The tables it holds.
    pub tables: Vec<String>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Heartbeat fresh and session present.
    pub live: bool,
}

/// The tables this process holds now, for its heartbeat (and metrics).
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<Mutex<Vec<String>>>);

impl Held {
    pub fn set(&self, tables: Vec<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = tables;
    }

    pub fn get(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// This process as a member of its pipeline's group: its own connection to the target
/// (the session its liveness is tied to), used from the thread that runs `run`'s rounds.
pub struct Group {
    target_url: String,
    pub pipeline: String,
    pub timeout_ms: u64,
    pub held: Held,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

impl Group {
    pub fn new(target_url: &str, pipeline: &str, timeout_ms: u64) -> Group {
        Group {
            target_url: target_url.to_string(),
            pipeline: pipeline.to_string(),
            timeout_ms,
            held: Held::default(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `f` on the member's connection (opened when needed, dropped after a failure).
    async fn on_conn<T>(
        &self,
        f: impl for<'c> FnOnce(&'c mut PgConnection) -> futures::future::BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(crate::conn::target(&self.target_url, "member").await?);
        }
        let out = f(slot.as_mut().expect("opened above")).await;
        if out.is_err() {
            *slot = None;
        }
        out
    }

    /// Every member of the pipeline on record (see [`list`]).
    pub async fn members(&self) -> Result<Vec<Member>> {
        let (pipeline, timeout) = (self.pipeline.clone(), self.timeout_ms);
        self.on_conn(move |c| Box::pin(async move { list(c, &pipeline, timeout).await }))
            .await
    }

    /// Which of `tables` no process holds now (see [`free`]).
    pub async fn free(&self, tables: &[String]) -> Result<Vec<String>> {
        let (pipeline, tables) = (self.pipeline.clone(), tables.to_vec());
        self.on_conn(move |c| Box::pin(async move { free(c, &pipeline, &tables).await }))
            .await
    }

    /// Whether some of `free` were last held by a member not among `live` (killed, say),
    /// with PostgreSQL up for longer than `member_timeout_ms`: then they are orphans, to be
    /// taken at once. Right after a PostgreSQL restart every member looks gone for a moment
    /// (their sessions are new), so then it is false.
    pub async fn orphaned(&self, free: &[String], live: &[String]) -> Result<bool> {
        let (pipeline, free, timeout) = (self.pipeline.clone(), free.to_vec(), self.timeout_ms);
        let (settled, owners): (bool, Vec<Option<String>>) = self
            .on_conn(move |c| {
                Box::pin(async move {
                    sqlx::query_as(
                        "SELECT pg_postmaster_start_time() < now() - $3 * interval '1 millisecond', \
                                COALESCE(array_agg(owner), '{}') \
                         FROM sluice.replication_state WHERE pipeline = $1 AND table_name = ANY($2)",
                    )
                    .bind(&pipeline)
                    .bind(&free)
                    .bind(timeout as f64)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| Error::db(Side::Target, "reading the free tables' owners", &e))
                })
            })
            .await?;
        Ok(settled
            && owners
                .iter()
                .any(|o| o.as_ref().is_none_or(|o| !live.contains(o))))
    }

    /// Writes this member's row every [`HEARTBEAT`] until `shutdown`, then deletes it.
    /// Failures are logged once and retried.
    pub async fn heartbeat(self: std::sync::Arc<Self>, shutdown: Shutdown) {
        let me = super::ownership::owner_id();
        let host = me
            .rsplit_once(':')
            .map_or(me.as_str(), |(h, _)| h)
            .to_string();
        let mut failing = false;
        loop {
            let (pipeline, me2, host2, tables) = (
                self.pipeline.clone(),
                me.clone(),
                host.clone(),
                self.held.get(),
            );
            let beaten = self
                .on_conn(move |c| {
                    Box::pin(async move { beat(c, &pipeline, &me2, &host2, &tables).await })
                })
                .await;
            match beaten {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "cannot write this member's heartbeat to the target; retrying");
                    }
                    failing = true;
                }
            }
            if shutdown.sleep(HEARTBEAT).await {
                break;
            }
        }
        let (pipeline, me2) = (self.pipeline.clone(), me.clone());
        let _ = self
            .on_conn(move |c| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM sluice.members WHERE pipeline = $1 AND member = $2")
                        .bind(&pipeline)
                        .bind(&me2)
                        .execute(&mut *c)
                        .await
                        .map_err(|e| Error::db(Side::Target, "leaving the group", &e))?;
                    Ok(())
                })
            })
            .await;
    }
}

async fn beat(
    conn: &mut PgConnection,
    pipeline: &str,
    me: &str,
    host: &str,
    tables: &[String],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sluice.members AS m (pipeline, member, host, session_pid, tables, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, pg_backend_pid(), $4, now(), now()) \
         ON CONFLICT (pipeline, member) DO UPDATE \
           SET session_pid = pg_backend_pid(), tables = EXCLUDED.tables, heartbeat_at = now()",
    )
    .bind(pipeline)
    .bind(me)
    .bind(host)
    .bind(tables)
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Target, "writing this member's heartbeat", &e))?;
    Ok(())
}

/// Every member of `pipeline` on record, live ones first; the dead ones' rows are kept for
/// an hour (for `status`), then removed.
pub async fn list(conn: &mut PgConnection, pipeline: &str, timeout_ms: u64) -> Result<Vec<Member>> {
    type Row = (
        String,
        String,
        Vec<String>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT member, host, tables, heartbeat_at, started_at, \
                heartbeat_at > now() - $2 * interval '1 millisecond' \
                  AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = m.session_pid) AS live \
         FROM sluice.members m WHERE pipeline = $1 AND heartbeat_at > now() - interval '1 hour' \
         ORDER BY live DESC, member",
    )
    .bind(pipeline)
    .bind(timeout_ms as f64)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Target, "reading sluice.members", &e))?;
    Ok(rows
        .into_iter()
        .map(
            |(member, host, tables, heartbeat_at, started_at, live)| Member {
                member,
                host,
                tables,
                heartbeat_at,
                started_at,
                live,
            },
        )
        .collect())
}

/// Which of `tables` (of `pipeline`) no process holds the lock of now.
pub async fn free(
    conn: &mut PgConnection,
    pipeline: &str,
    tables: &[String],
) -> Result<Vec<String>> {
    // An advisory lock on a bigint key shows in pg_locks as classid (high 32 bits) and objid
    // (low 32 bits), objsubid 1.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT t FROM unnest($2::text[]) AS t \
         WHERE NOT EXISTS (SELECT 1 FROM pg_locks l \
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::bigint = ({key} >> 32) & 4294967295 \
             AND l.objid::bigint = {key} & 4294967295)",
        key = super::ownership::LOCK_KEY.replace("$2", "t")
    )))
    .bind(pipeline)
    .bind(tables)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Target, "reading which tables are free", &e))
}

/// Each live member's share of `tables` tables.
pub fn share(tables: usize, live: usize) -> usize {
    tables.div_ceil(live.max(1))
}

/// The order in which member `me` reaches for `tables` among the `live` members (`me`
/// included): first the tables it ranks highest for (rendezvous hashing of member and
/// table), then the rest by how close it comes. Returns indexes into `tables`.
pub fn preference(me: &str, live: &[String], tables: &[String]) -> Vec<usize> {
    let score = |m: &str, t: &str| fnv(format!("{m}\u{1}{t}").as_bytes());
    let mut ranked: Vec<(usize, u64, usize)> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mine = score(me, t);
            let above = live
                .iter()
                .filter(|m| m.as_str() != me && score(m, t) > mine)
                .count();
            (above, mine, i)
        })
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    ranked.into_iter().map(|(_, _, i)| i).collect()
}

/// 64-bit FNV-1a: the same in every process and version.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_up() {
        assert_eq!(share(9, 3), 3);
        assert_eq!(share(10, 3), 4);
        assert_eq!(share(9, 0), 9);
        assert_eq!(share(1, 2), 1);
    }

    #[test]
    fn members_prefer_different_tables() {
        let live: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        let tables: Vec<String> = (1..=9).map(|i| format!("t{i}")).collect();
        // Each table is first choice of exactly one member.
        let firsts: Vec<Vec<usize>> = live
            .iter()
            .map(|m| {
                preference(m, &live, &tables)
                    .into_iter()
                    .filter(|&i| {
                        live.iter().all(|o| {
                            o == m
                                || fnv(format!("{o}\u{1}{}", tables[i]).as_bytes())
                                    < fnv(format!("{m}\u{1}{}", tables[i]).as_bytes())
                        })
                    })
                    .collect()
            })
            .collect();
        let mut all: Vec<usize> = firsts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..9).collect::<Vec<_>>());
        // Every order holds every table once.
        let mut p = preference("a:1", &live, &tables);
        p.sort_unstable();
        assert_eq!(p, (0..9).collect::<Vec<_>>());
    }
}
