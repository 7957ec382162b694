//! The writer: hands each batch to its lane's [`Sink`], which applies it and advances the
//! positions in one transaction, retrying transient failures with the one retry policy.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use chrono::Utc;
use crossbeam_channel::Receiver;
use tracing::{debug, info, warn};

use super::side::{Outcome, Side, SideSink};
use super::{stage_runtime, BatchMsg, Event, Lease};
use crate::config::Retry;
use crate::error::{Error, Result};
use crate::model::{Batch, TableId};
use crate::retry::{Decision, Retrier};
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::sink::{CaughtUp, PartApplied};
use crate::telemetry::{Commit, OpCounts, TableHandle};

pub struct WriterConfig {
    pub lane: usize,
    pub sink: Box<dyn Sink>,
    pub input: Receiver<BatchMsg>,
    pub handles: Arc<[Arc<TableHandle>]>,
    pub retry: Retry,
    pub shutdown: Shutdown,
    pub events: Recipient<Event>,
    /// The sink of a second target connection, for the chunks of a copy beside the binlog
    /// stream (see [`super::side`]); made when the first such chunk comes.
    pub side: Option<SideSink>,
}

/// One sink call, retried as a whole.
#[derive(Clone, Copy)]
enum Job<'a> {
    Apply(&'a Batch),
    CaughtUp(TableId),
}

enum Done {
    Applied(Vec<PartApplied>),
    CaughtUp(CaughtUp),
}

struct Inner {
    cfg: WriterConfig,
    rt: tokio::runtime::Runtime,
    policy: Retrier,
    /// When the last sink call started: a write's duration excludes its retries.
    last_attempt: Instant,
    /// A transaction spanning batches was lost: everything that follows is dropped until the
    /// lane is restarted from the stored positions.
    broken: bool,
    /// What chunks of the open transaction applied, counted when it commits.
    applied: Vec<(TableId, Commit)>,
    /// The copy's connection, once a chunk came.
    side: Option<Side>,
    /// Tables whose shape changed in this lane: they stay on the lane's connection.
    reshaped: HashSet<TableId>,
    /// Tables caught up whose last batches are still on the copy's connection, with the
    /// mark those batches are committed at: their copy is finished once they are, while
    /// the other tables' batches go on.
    caught_up_later: Vec<(TableId, u64)>,
}

/// `None` once finished.
pub struct Writer(Option<Inner>);

impl Writer {
    pub fn new(cfg: Option<WriterConfig>) -> Self {
        Writer(cfg.map(|cfg| Inner {
            policy: Retrier::new(&cfg.retry),
            cfg,
            rt: stage_runtime(),
            last_attempt: Instant::now(),
            broken: false,
            applied: Vec::new(),
            side: None,
            reshaped: HashSet::new(),
            caught_up_later: Vec::new(),
        }))
    }
}

impl Actor for Writer {
    type Context = SyncContext<Self>;
}

/// Take the next batch off the channel and write it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteNext;

impl Inner {
    /// Runs one sink call until it succeeds, retrying transient errors. After shutdown,
    /// nothing is retried and a call still running when the grace period ends is
    /// abandoned. `Err` is the permanent error (or [`Error::Shutdown`]).
    fn run(&mut self, tables: &[TableId], job: Job<'_>) -> Result<Done> {
        // A transaction already open (earlier chunks), or this batch leaving one open: an
        // error cannot be retried by this batch alone.
        let spanning = match job {
            Job::Apply(b) => !b.commit || self.cfg.sink.in_transaction(),
            Job::CaughtUp(_) => false,
        };
        loop {
            self.last_attempt = Instant::now();
            let shutdown = self.cfg.shutdown.clone();
            let sink = &mut *self.cfg.sink;
            let call = async {
                match job {
                    Job::Apply(batch) => sink.apply(batch).await.map(Done::Applied),
                    Job::CaughtUp(table) => sink.caught_up(table).await.map(Done::CaughtUp),
                }
            };
            let r = self.rt.block_on(async {
                tokio::select! {
                    r = call => r,
                    _ = shutdown.grace_over() => Err(Error::Shutdown),
                }
            });
            let e = match r {
                Ok(v) => {
                    self.policy.reset();
                    return Ok(v);
                }
                Err(e) => e,
            };
            if spanning && e.is_retryable() {
                self.applied.clear();
                // What this transaction applied before is gone with it: only reading the
                // source again from the stored positions can redo it.
                self.cfg.sink.reset();
                self.broken = true;
                warn!(lane = self.cfg.lane, error = %e, "a target transaction spanning several batches was lost; the lane starts again from the stored positions");
                self.cfg.events.do_send(Event::LaneBroken {
                    lane: self.cfg.lane,
                    error: Arc::new(e),
                });
                return Err(Error::Shutdown);
            }
            match self.policy.decide(&e, &self.cfg.shutdown) {
                Decision::Retry { attempt, delay } => {
                    // The connection may be broken; a fresh one is opened for the retry.
                    self.cfg.sink.reset();
                    warn!(lane = self.cfg.lane, attempt, delay_ms = delay.as_millis() as u64, error = %e, "target write failed; retrying");
                    for &t in tables {
                        self.cfg.handles[t].retrying("writer", &e);
                    }
                    if self.cfg.shutdown.wait(delay) {
                        return Err(Error::Shutdown);
                    }
                }
                Decision::Stop => {
                    // Cut short by shutdown (the connection's state is unknown), or a
                    // permanent error (a bad row, a table fenced off): the sink's transaction
                    // is dropped, so that nothing of the failed batch commits with a later
                    // one.
                    self.cfg.sink.reset();
                    if matches!(e, Error::Shutdown) || e.is_retryable() {
                        return Err(Error::Shutdown);
                    }
                    if spanning {
                        // Earlier chunks of the transaction went with it: the other tables
                        // read it again from their stored positions, without the failed one.
                        self.applied.clear();
                        self.broken = true;
                        warn!(lane = self.cfg.lane, error = %e, "a table failed inside a target transaction spanning several batches; the lane starts again from the stored positions without it");
                        self.cfg.events.do_send(Event::LaneBroken {
                            lane: self.cfg.lane,
                            error: Arc::new(Error::Other(format!(
                                "a table failed inside a source transaction: {e}"
                            ))),
                        });
                    }
                    return Err(e);
                }
            }
        }
    }

    fn fail(&self, table: TableId, error: Arc<Error>) {
        super::table_failed(&self.cfg.handles, &self.cfg.events, table, "writer", error);
    }

    fn write(&mut self, batch: Batch, lease: Lease) {
        for p in &batch.parts {
            self.cfg.handles[p.table].batch_queued(-1);
        }
        // The lane lost a transaction spanning several batches: what follows of it is
        // dropped (committing it alone would store positions past the lost chunks); the lane
        // starts again from the stored positions.
        if self.broken {
            return;
        }
        while let Some(o) = self.side.as_mut().and_then(|s| s.next(false)) {
            self.outcome(o);
        }
        if let Some((batch, _lease)) = self.route(batch, lease) {
            self.apply(batch);
        }
    }

    /// Sends the parts of `batch` that go to the copy's connection there (see
    /// [`super::side`]), and returns the rest, once the side has committed what they
    /// must follow.
    fn route(&mut self, mut batch: Batch, lease: Lease) -> Option<(Batch, Lease)> {
        for p in batch.parts.iter().filter(|p| p.shape.is_some()) {
            self.reshaped.insert(p.table);
        }
        let usable = batch.commit
            && !self.cfg.sink.in_transaction()
            && self
                .side
                .as_ref()
                .map_or(self.cfg.side.is_some(), Side::open);
        let (aside, main): (Vec<_>, Vec<_>) = batch.parts.into_iter().partition(|p| {
            usable && !self.reshaped.contains(&p.table) && (p.beside || self.side_holds(p.table))
        });
        batch.parts = main;
        let mut lease = Some(lease);
        if !aside.is_empty() {
            if self.side.is_none() {
                let make = self.cfg.side.take().expect("usable above");
                match Side::start(self.cfg.lane, make, self.cfg.shutdown.clone()) {
                    Ok(side) => self.side = Some(side),
                    Err(e) => {
                        warn!(lane = self.cfg.lane, error = %e, "the copy's chunks commit on the lane's connection")
                    }
                }
            }
            let part = Batch {
                parts: aside,
                commit: true,
                transactions: 0,
            };
            let sent = match self.side.as_mut() {
                Some(side) => side.send(part, lease.take().unwrap_or_default()),
                None => Err((part, lease.take().unwrap_or_default())),
            };
            if let Err((part, l)) = sent {
                // Not open: these parts commit here, before the rest, as they would have.
                lease = Some(l);
                batch.parts.splice(0..0, part.parts);
            }
        }
        // A part committing here follows its table's batches on the copy's connection.
        let waits: Vec<TableId> = batch
            .parts
            .iter()
            .map(|p| p.table)
            .filter(|&t| self.side_holds(t))
            .collect();
        for t in waits {
            self.settle(Some(t));
        }
        if batch.parts.is_empty() {
            return None;
        }
        Some((batch, lease.unwrap_or_default()))
    }

    fn side_holds(&self, table: TableId) -> bool {
        self.side.as_ref().is_some_and(|s| s.holds(table))
    }

    /// Takes the copy's connection's outcomes until `table` (every table: `None`) has no
    /// batch there.
    fn settle(&mut self, table: Option<TableId>) {
        loop {
            let Some(side) = self.side.as_mut() else {
                return;
            };
            let done = match table {
                Some(t) => !side.holds(t),
                None => !side.busy(),
            };
            if done {
                return;
            }
            match side.next(true) {
                Some(o) => self.outcome(o),
                None => return self.side_lost(),
            }
        }
    }

    /// The copy's writer thread ended without giving its batches back: what they held is
    /// read again, the lane starting over from the stored positions.
    fn side_lost(&mut self) {
        if !self.broken {
            self.broken = true;
            self.applied.clear();
            self.cfg.sink.reset();
            let e =
                Error::Other("the copy's writer thread ended with batches not committed".into());
            warn!(lane = self.cfg.lane, error = %e, "the lane starts again from the stored positions");
            self.cfg.events.do_send(Event::LaneBroken {
                lane: self.cfg.lane,
                error: Arc::new(e),
            });
        }
        self.caught_up_later.clear();
    }

    /// A batch back from the copy's connection: counted when committed; otherwise applied
    /// here (retried, or stopping its table).
    fn outcome(&mut self, o: Outcome) {
        self.take_outcome(o);
        self.finish_copies();
    }

    /// Copies whose last batches are now committed on the copy's connection are finished.
    fn finish_copies(&mut self) {
        let side = self.side.as_ref();
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.caught_up_later)
            .into_iter()
            .partition(|(_, mark)| side.is_none_or(|s| s.passed(*mark)));
        self.caught_up_later = later;
        for (table, _) in ready {
            self.caught_up(table);
        }
    }

    fn take_outcome(&mut self, o: Outcome) {
        let Outcome {
            batch,
            result,
            lease,
        } = o;
        match result {
            Ok((parts, took)) => {
                let commits = Self::commits(&batch, &parts, took);
                drop(lease);
                crate::failpoint::hit("after_commit");
                for (table, c) in commits {
                    debug!(table = %self.cfg.handles[table].name, rows = c.rows, ms = took.as_millis() as u64, "batch committed (copy's connection)");
                    self.cfg.handles[table].committed(c);
                }
            }
            Err(e) => {
                if !self.broken {
                    if !matches!(e, Error::Shutdown) {
                        warn!(lane = self.cfg.lane, error = %e, "a batch on the copy's connection was not committed; it is applied on the lane's connection, and the copy goes on there");
                    }
                    self.apply(batch);
                }
                drop(lease);
            }
        }
    }

    /// What each part of a committed `batch` counts in its table's stats.
    fn commits(batch: &Batch, parts: &[PartApplied], took: Duration) -> Vec<(TableId, Commit)> {
        let committed_at = Utc::now();
        parts
            .iter()
            .zip(&batch.parts)
            .map(|(p, part)| {
                (
                    p.table,
                    Commit {
                        rows: p.rows,
                        merged: p.merged,
                        dead_lettered: p.dead_lettered,
                        filtered: p.filtered,
                        newest: part.source_time,
                        committed_at,
                        took,
                        ops: OpCounts::of(&part.changes),
                        position: (batch.commit && !part.position.0.is_null())
                            .then(|| part.position.clone()),
                    },
                )
            })
            .collect()
    }

    /// Applies `batch` (but its parts of tables stopped meanwhile) and counts it; on a
    /// permanent error from one table's part, stops that table and applies the rest again
    /// without it.
    fn apply(&mut self, mut batch: Batch) {
        // A table that failed meanwhile: its batches are dropped (read again on restart).
        batch.parts.retain(|p| !self.cfg.handles[p.table].stopped());
        if batch.parts.is_empty() {
            return;
        }
        let tables: Vec<TableId> = batch.parts.iter().map(|p| p.table).collect();
        let result = self.run(&tables, Job::Apply(&batch));
        match result {
            Ok(Done::CaughtUp(_)) => {}
            Ok(Done::Applied(parts)) => {
                let took = self.last_attempt.elapsed();
                self.applied.extend(Self::commits(&batch, &parts, took));
                if !batch.commit {
                    // Chunks count once their transaction commits.
                    return;
                }
                crate::failpoint::hit("after_commit");
                crate::telemetry::transactions_applied(batch.transactions);
                for (table, c) in std::mem::take(&mut self.applied) {
                    debug!(table = %self.cfg.handles[table].name, rows = c.rows, merged = c.merged, ms = took.as_millis() as u64, "batch committed");
                    self.cfg.handles[table].committed(c);
                }
            }
            Err(Error::Shutdown) => {
                warn!(
                    lane = self.cfg.lane,
                    changes = batch.changes(),
                    "shutdown: a batch was not committed; it will be read again on the next start"
                );
            }
            Err(e) => {
                let e = Arc::new(e);
                // The error came from one table's part: that table stops, the others go on.
                // Inside a transaction spanning batches, the lane starts again from the
                // stored positions (see `run`); otherwise the rest of the batch is applied
                // now, without it.
                let culprit = self
                    .cfg
                    .sink
                    .failed_table()
                    .filter(|t| tables.len() > 1 && tables.contains(t));
                match culprit {
                    Some(t) => {
                        self.fail(t, e);
                        if !self.broken {
                            self.apply(batch);
                        }
                    }
                    None => {
                        for t in tables {
                            self.fail(t, e.clone());
                        }
                    }
                }
            }
        }
    }

    /// The source caught up with `table`: builds an initial load's deferred key.
    fn caught_up(&mut self, table: TableId) {
        if self.broken || self.cfg.handles[table].stopped() {
            return;
        }
        let started = Instant::now();
        match self.run(&[table], Job::CaughtUp(table)) {
            Ok(Done::Applied(_)) => {}
            Ok(Done::CaughtUp(done)) => {
                if let Some(removed) = done.key_built {
                    info!(
                        table = %self.cfg.handles[table].name,
                        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                        older_copies_removed = removed,
                        "primary key built: the initial load is over"
                    );
                }
            }
            Err(Error::Shutdown) => {}
            Err(e) => self.fail(table, Arc::new(e)),
        }
    }
}

impl Handler<WriteNext> for Writer {
    type Result = ();

    /// Writes batch after batch on this thread until finished (see the poller's).
    fn handle(&mut self, _: WriteNext, _: &mut SyncContext<Self>) {
        while self.step() {}
    }
}

impl Writer {
    /// Takes the next message (a batch, a table caught up, or an outcome from the copy's
    /// connection) and acts on it; false once finished.
    fn step(&mut self) -> bool {
        let Some(inner) = self.0.as_mut() else {
            return false;
        };
        // While batches are on the copy's connection, their outcomes are taken as they come
        // (counted at once), beside the lane's input.
        let input = match inner.side.as_ref().filter(|s| s.busy()).map(Side::results) {
            Some(results) => crossbeam_channel::select! {
                recv(inner.cfg.input) -> m => m,
                recv(results) -> o => {
                    match o {
                        Ok(o) => {
                            let o = inner.side.as_mut().expect("busy above").received(o);
                            inner.outcome(o);
                        }
                        // The thread is gone: `settle` notices.
                        Err(_) => inner.settle(None),
                    }
                    return true;
                }
            },
            None => inner.cfg.input.recv(),
        };
        match input {
            Ok(BatchMsg::Batch(batch, lease)) => {
                // The rows are committed (or dropped, or on the copy's connection) when it
                // returns: their bytes go back to the budget with the lease.
                inner.write(batch, lease);
                true
            }
            Ok(BatchMsg::CaughtUp(table)) => {
                // The table's last chunks may still be on the copy's connection: it is
                // finished once they are committed (see `outcome`).
                match inner.side.as_ref().filter(|s| s.holds(table)) {
                    Some(side) => inner.caught_up_later.push((table, side.mark())),
                    None => inner.caught_up(table),
                }
                true
            }
            Err(_) => {
                let lane = inner.cfg.lane;
                // What is on the copy's connection commits (or is applied here) first.
                inner.settle(None);
                for (table, _) in std::mem::take(&mut inner.caught_up_later) {
                    inner.caught_up(table);
                }
                if inner.cfg.sink.in_transaction() {
                    // Chunks of a source transaction whose end never came: rolled back.
                    inner.cfg.sink.reset();
                }
                info!(lane, "writer finished");
                inner.cfg.events.do_send(Event::LaneFinished { lane });
                self.0 = None;
                false
            }
        }
    }
}
