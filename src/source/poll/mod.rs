//! Keyset polling: each table is read in pages `WHERE (cursor, pk) > (position) ORDER BY
//! cursor, pk LIMIT n` (see [`table`] for the locking read that keeps late commits, and the
//! reads below the oldest open transaction), its position being the keyset of the last row
//! handed out ([`keyset`]).
//!
//! One [`PollSource`] serves several tables over one connection, taking them in turn: a
//! table with a backlog gets one page per turn, so a busy table cannot starve the others,
//! and a caught-up table is read again after the poll interval.

pub mod keyset;
mod table;

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sea_orm::sqlx::{self, MySqlConnection};

use self::keyset::Keyset;
use self::table::{Outcome, TableReader};
use super::mysql::{self, Flavor, ReadSpec};
use super::{After, OpenTable, Read, Source, Step, TablePlan};
use crate::config::{Settings, TableSettings};
use crate::error::{Error, Result, Side};
use crate::model::{Change, ChangeSet};
use crate::value::row_bytes;

/// Largest keyset page read at once, in rows.
pub const MAX_PAGE_ROWS: usize = 10_000;

/// What start-up learnt of a polled table.
#[derive(Debug)]
pub struct PollPlan {
    pub spec: ReadSpec,
    pub keyset: Keyset,
    pub estimated_rows: u64,
    /// InnoDB's average row length: sizes the first page before any row was seen.
    pub avg_row_bytes: u64,
}

/// Introspects a table and resolves its cursor and key.
pub async fn plan(
    conn: &mut MySqlConnection,
    settings: &Settings,
    t: &TableSettings,
) -> Result<PollPlan> {
    let (source, key) = mysql::introspect_keyed(conn, t).await?;
    let cursor = t.cursor.as_ref().map(|c| c.to_vec()).ok_or_else(|| {
        Error::Config(format!(
            "table {:?} has no cursor; polling needs one (see [[tables]] cursor)",
            t.name
        ))
    })?;
    let keyset = Keyset::resolve(&source, &cursor, &key)?;
    let spec = ReadSpec::new(&source, key, settings.zero_dates, &keyset.columns);
    let stats = mysql::table_stats(conn, &t.name).await?;
    Ok(PollPlan {
        spec,
        keyset,
        estimated_rows: stats.rows,
        avg_row_bytes: stats.avg_row_bytes,
    })
}

/// How pages are read.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Stop each table at its end as of start.
    pub once: bool,
    pub page_rows: usize,
    /// Bytes a page holds at most (plus one row).
    pub page_bytes: usize,
    pub poll_interval: Duration,
    pub safety_lag: Duration,
}

impl PollOptions {
    pub fn new(settings: &Settings, once: bool) -> Self {
        let p = &settings.pipeline;
        PollOptions {
            once,
            // A page is held whole while it is decoded: it never exceeds a batch.
            page_rows: p.batch_rows.min(MAX_PAGE_ROWS),
            page_bytes: p.page_bytes(),
            poll_interval: Duration::from_millis(p.poll_interval_ms),
            safety_lag: Duration::from_millis(settings.safety_lag_ms),
        }
    }
}

/// Polls a set of tables over one source connection, one page per turn.
pub struct PollSource {
    url: String,
    opts: PollOptions,
    conn: Option<(MySqlConnection, Flavor)>,
    tables: Vec<TableReader>,
    /// The table the next turn starts looking from.
    turn: usize,
    /// Reads below the horizon are possible (cleared when PROCESS is missing).
    free_reads: bool,
}

impl PollSource {
    pub fn new(settings: &Settings, once: bool, tables: Vec<OpenTable>) -> Result<Self> {
        let opts = PollOptions::new(settings, once);
        let tables = tables
            .into_iter()
            .map(|t| {
                let TablePlan::Poll(plan) = &*t.plan else {
                    return Err(Error::Other(format!(
                        "table {:?} was planned for another capture mode",
                        t.handle.name
                    )));
                };
                let start = t
                    .start
                    .as_ref()
                    .map(|p| plan.keyset.decode(&plan.spec.model, p))
                    .transpose()?;
                // A first page sized by InnoDB's average row length (rows in memory take
                // about twice their size on disk); later pages follow the rows seen.
                let first = opts.page_bytes / (plan.avg_row_bytes as usize * 2).max(64);
                Ok(TableReader::new(
                    t.id,
                    plan.spec.clone(),
                    plan.keyset.clone(),
                    t.handle,
                    start,
                    first.clamp(1, opts.page_rows),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PollSource {
            url: settings.source_url.clone(),
            opts,
            conn: None,
            tables,
            turn: 0,
            free_reads: true,
        })
    }

    async fn connect(url: &str) -> Result<(MySqlConnection, Flavor)> {
        let mut conn = mysql::connect(url).await?;
        let flavor = Flavor::detect(&mut conn).await?;
        // Reads happen in READ COMMITTED: the locking read then takes no gap locks, so it
        // never blocks the application's inserts.
        sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut conn)
            .await
            .map_err(|e| Error::db(Side::Source, "setting the read isolation level", &e))?;
        Ok((conn, flavor))
    }

    /// The next table due for a read, taking tables in turn; or how long until one is due
    /// (`Err(None)` when every table is done).
    fn due(&mut self) -> std::result::Result<usize, Option<Duration>> {
        let now = Instant::now();
        let n = self.tables.len();
        let mut soonest: Option<Instant> = None;
        for k in 0..n {
            let i = (self.turn + k) % n;
            let t = &mut self.tables[i];
            if !t.done && t.handle.stopped() {
                t.done = true;
            }
            if t.done {
                continue;
            }
            if t.due <= now {
                self.turn = (i + 1) % n;
                return Ok(i);
            }
            soonest = Some(soonest.map_or(t.due, |s| s.min(t.due)));
        }
        Err(soonest.map(|s| s.saturating_duration_since(now)))
    }

    async fn step(&mut self) -> Result<Step> {
        let i = match self.due() {
            Ok(i) => i,
            Err(Some(wait)) => return Ok(Step::Wait(wait)),
            Err(None) => return Ok(Step::Finished),
        };
        if self.conn.is_none() {
            self.conn = Some(Self::connect(&self.url).await?);
        }
        let (conn, flavor) = self.conn.as_mut().expect("connected above");
        let t = &mut self.tables[i];
        let id = t.id;
        let outcome = match t
            .read(conn, *flavor, &self.opts, &mut self.free_reads)
            .await
        {
            Ok(o) => o,
            Err(e) if e.is_retryable() => return Err(e),
            Err(error) => {
                t.done = true;
                return Ok(Step::Failed { table: id, error });
            }
        };
        crate::failpoint::hit("after_read");
        let now = Instant::now();
        let (changes, after) = match outcome {
            Outcome::Exhausted => (None, After::CaughtUp),
            Outcome::Held => (None, After::Held),
            Outcome::Rows { rows, full } => {
                let after = if full { After::More } else { After::CaughtUp };
                let set = (!rows.is_empty()).then(|| {
                    let model = &t.spec.model;
                    let last = t.position.clone().expect("moved to the last row");
                    let source_time = if t.keyset.time_cursor(model) {
                        last.first().and_then(|v| v.as_utc())
                    } else {
                        None
                    };
                    let bytes = rows.iter().map(row_bytes).sum();
                    ChangeSet {
                        table: id,
                        position: t.keyset.position(model, last),
                        changes: rows.into_iter().map(Change::upsert).collect(),
                        bytes,
                        source_time,
                    }
                });
                (set, after)
            }
        };
        match after {
            After::More => t.due = now,
            After::CaughtUp | After::Held => t.due = now + self.opts.poll_interval,
        }
        if after == After::CaughtUp && self.opts.once {
            t.done = true;
        }
        Ok(Step::Read(Read {
            table: id,
            changes,
            after,
        }))
    }
}

impl Source for PollSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Step>> {
        Box::pin(self.step())
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}
