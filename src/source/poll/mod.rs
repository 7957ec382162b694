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
use super::mysql::{self, Flavor, ReadSpec, Zone};
use super::{After, OpenTable, Read, Source, Step, TablePlan};
use crate::config::{Settings, TableSettings};
use crate::error::{Error, Result, Side};
use crate::model::{Change, ChangeSet};
use crate::value::{row_bytes, Value};
use tracing::{info, warn};

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
    let (source, key) = mysql::introspect_keyed(conn, t, true).await?;
    let cursor = t.cursor.as_ref().map(|c| c.to_vec()).ok_or_else(|| {
        Error::Config(format!(
            "table {:?} has no cursor; polling needs one (see [[tables]] cursor)",
            t.name
        ))
    })?;
    let keyset = Keyset::resolve(&source, &cursor, &key)?;
    let spec = ReadSpec::new(&source, key, settings.source.zero_dates, &keyset.columns);
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
    /// `[source] datetime_zone`; `None`: the server's global time zone.
    pub datetime_zone: Option<String>,
    /// `[pipeline] key_order_load`.
    pub key_order_load: bool,
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
            safety_lag: Duration::from_millis(settings.source.safety_lag_ms),
            datetime_zone: settings.source.datetime_zone.clone(),
            key_order_load: p.key_order_load,
        }
    }
}

/// Polls a set of tables over one source connection, one page per turn.
pub struct PollSource {
    url: String,
    /// Each table's `[[tables]]` entry, by table id (a schema change is introspected again).
    configs: Vec<TableSettings>,
    zero_dates: crate::config::ZeroDates,
    opts: PollOptions,
    conn: Option<(MySqlConnection, Flavor)>,
    tables: Vec<TableReader>,
    /// The table the next turn starts looking from.
    turn: usize,
    /// Reads below the horizon are possible (cleared when PROCESS is missing).
    free_reads: bool,
    /// The zone DATETIME cursors are written in, and when it was last looked at.
    zone: Option<(Zone, Instant)>,
}

/// How often the zone's offset is looked at (a daylight-saving change, a new global zone).
const ZONE_EVERY: Duration = Duration::from_secs(1);
/// How often a caught-up table's newest cursor value is compared with the clock.
const AHEAD_EVERY: Duration = Duration::from_secs(60);
/// A newest cursor value this far past the clock is reported.
const AHEAD_REPORTED_S: i64 = 5;

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
                let mut reader = TableReader::new(
                    t.id,
                    plan.spec.clone(),
                    plan.keyset.clone(),
                    t.handle,
                    start,
                    first.clamp(1, opts.page_rows),
                );
                if let Some((after, until)) = t.start.as_ref().and_then(Keyset::decode_load) {
                    reader.resume_load(after, until);
                } else if !opts.key_order_load
                    || plan.estimated_rows < settings.pipeline.key_order_load_min_rows
                {
                    reader.no_key_order_load();
                }
                Ok(reader)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PollSource {
            url: settings.source.url.clone(),
            configs: settings.tables.clone(),
            zero_dates: settings.source.zero_dates,
            opts,
            conn: None,
            tables,
            turn: 0,
            free_reads: true,
            zone: None,
        })
    }

    /// Resolves the zone DATETIME cursors are compared in, and follows it: when the zone
    /// or its offset changes, every table's SQL is rebuilt, and when its clock goes back
    /// (the autumn change), positions on local-time cursors move back as far.
    async fn follow_zone(
        conn: &mut MySqlConnection,
        zone: &mut Option<(Zone, Instant)>,
        tables: &mut [TableReader],
        configured: Option<&str>,
    ) -> Result<()> {
        if zone
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < ZONE_EVERY)
        {
            return Ok(());
        }
        if !tables.iter().any(TableReader::local_time_cursor) {
            if zone.is_none() {
                *zone = Some((
                    Zone {
                        name: Zone::UTC.into(),
                        offset_us: 0,
                    },
                    Instant::now(),
                ));
            }
            if let Some((_, at)) = zone.as_mut() {
                *at = Instant::now();
            }
            return Ok(());
        }
        let now = mysql::resolve_zone(conn, configured).await?;
        if let Some((before, _)) = zone.as_ref() {
            if before != &now {
                let back = before.offset_us - now.offset_us;
                // Whole minutes only: a zone's offset never moves by less.
                if back >= 60_000_000 {
                    warn!(from = %before.name, to = %now.name, back_s = back / 1_000_000, "the source's clock for DATETIME cursors went back (a daylight-saving change or a new zone): positions move back as far, so the rows of the repeated time are read (those read before are applied again, harmlessly)");
                    for t in tables.iter_mut() {
                        t.rewind(back);
                    }
                } else if before.name != now.name || back.abs() >= 60_000_000 {
                    info!(from = %before.name, to = %now.name, "the source's zone for DATETIME cursors changed");
                }
                for t in tables.iter_mut() {
                    t.rebuild();
                }
            }
        }
        *zone = Some((now, Instant::now()));
        Ok(())
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
        Self::follow_zone(
            conn,
            &mut self.zone,
            &mut self.tables,
            self.opts.datetime_zone.as_deref(),
        )
        .await?;
        let zone = &self.zone.as_ref().expect("resolved above").0;
        let t = &mut self.tables[i];
        let id = t.id;
        let Some(config) = self.configs.get(id) else {
            return Err(Error::Other(format!("table #{id} has no [[tables]] entry")));
        };
        let before = t.mark();
        let outcome = match t
            .read(conn, *flavor, zone, &self.opts, &mut self.free_reads)
            .await
        {
            Ok(o) => o,
            Err(e) if e.is_retryable() => return Err(e),
            // A column it reads went (or the table did): look at the table again now.
            Err(error) if matches!(error.sqlstate(), Some("42S22" | "42S02")) => {
                match t.follow_shape(conn, config, self.zero_dates, before).await {
                    Ok(true) => {
                        return Ok(Step::Read(Read {
                            table: id,
                            changes: None,
                            after: After::More,
                        }))
                    }
                    Ok(false) => {
                        t.done = true;
                        return Ok(crate::source::table_failed(id, config, error));
                    }
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(error) => {
                        t.done = true;
                        return Ok(crate::source::table_failed(id, config, error));
                    }
                }
            }
            Err(error) => {
                t.done = true;
                return Ok(crate::source::table_failed(id, config, error));
            }
        };
        // A schema change: rows read across it are read again, in the new shape.
        if matches!(&outcome, Outcome::Rows { rows, .. } if !rows.is_empty()) {
            let shape = if crate::failpoint::trip("lost_after_read") {
                Err(Error::Database {
                    side: crate::error::Side::Source,
                    context: format!("reading the definition of table {:?}", t.name()),
                    message: "connection lost (failpoint lost_after_read)".into(),
                    code: None,
                    transient: true,
                })
            } else {
                t.follow_shape(conn, config, self.zero_dates, before.clone())
                    .await
            };
            match shape {
                Ok(false) => {}
                Ok(true) => {
                    return Ok(Step::Read(Read {
                        table: id,
                        changes: None,
                        after: After::More,
                    }))
                }
                // The rows just read are dropped with the error: read them again after it
                // (the position had moved past them; going on from there lost them when
                // the server went down at this moment).
                Err(e) if e.is_retryable() => {
                    t.restore(before);
                    return Err(e);
                }
                Err(error) => {
                    t.done = true;
                    return Ok(crate::source::table_failed(id, config, error));
                }
            }
        }
        crate::failpoint::hit("after_read");
        let now = Instant::now();
        let (changes, mut after) = match outcome {
            Outcome::Exhausted => (None, After::CaughtUp),
            Outcome::Held => (None, After::Held),
            Outcome::Rows { rows, full } => {
                let after = if full { After::More } else { After::CaughtUp };
                let set = (!rows.is_empty()).then(|| {
                    let model = &t.spec.model;
                    let last = t.position.clone().expect("moved to the last row");
                    let source_time = match last.first() {
                        Some(Value::DateTime(local)) if t.keyset.time_cursor(model) => {
                            Some(zone.to_utc(*local))
                        }
                        Some(v) if t.keyset.time_cursor(model) => v.as_utc(),
                        _ => None,
                    };
                    let bytes = rows.iter().map(row_bytes).sum();
                    ChangeSet {
                        table: id,
                        position: t.stored_position().expect("moved to the last row"),
                        changes: rows.into_iter().map(Change::upsert).collect(),
                        bytes,
                        source_time,
                        shape: t.pending_shape.take(),
                        first_reads: before.in_key_order_load(),
                        beside: false,
                    }
                });
                (set, after)
            }
        };
        // `--once` ends a table at its end as of start, not where the read horizon stops.
        if after == After::CaughtUp && self.opts.once {
            match t.left_as_of_start(conn).await {
                Ok(true) => after = After::Held,
                Ok(false) => {}
                // As below: the rows read are not handed out, so they are read again.
                Err(e) => {
                    t.restore(before);
                    return Err(e);
                }
            }
        }
        match after {
            After::More => t.due = now,
            After::CaughtUp | After::Held => t.due = now + self.opts.poll_interval,
        }
        // Caught up with rows held back by the clock: say so, rather than look idle.
        if after == After::CaughtUp && t.ahead_checked.is_none_or(|at| at.elapsed() >= AHEAD_EVERY)
        {
            t.ahead_checked = Some(now);
            let ahead = match t.ahead(conn, zone).await {
                Ok(a) => a,
                // As above: the rows read are not handed out, so they are read again.
                Err(e) => {
                    t.restore(before);
                    return Err(e);
                }
            };
            if let Some(a) = ahead {
                t.handle.set_rows_future(a.rows);
            }
            if let Some(a) = ahead.filter(|a| a.newest_s > AHEAD_REPORTED_S) {
                if !t.ahead_warned {
                    t.ahead_warned = true;
                    warn!(
                        table = %t.handle.name,
                        rows = a.rows,
                        ahead_s = a.newest_s,
                        zone = %zone.name,
                        "the newest cursor value is ahead of the source's clock: rows past the clock wait until it reaches them. A DATETIME cursor is compared with the clock in the server's time zone (@@global.time_zone); if the application writes its times in another zone, set [source] datetime_zone to it"
                    );
                }
            }
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
