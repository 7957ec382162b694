//! The writer: hands each batch to its lane's [`Sink`], which applies it and advances the
//! positions in one transaction, retrying transient failures with the one retry policy.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use chrono::Utc;
use crossbeam_channel::Receiver;
use tracing::{debug, info, warn};

use super::{stage_runtime, BatchMsg, Event};
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

    fn write(&mut self, batch: Batch) {
        for p in &batch.parts {
            self.cfg.handles[p.table].batch_queued(-1);
        }
        // The lane lost a transaction spanning several batches: what follows of it is
        // dropped (committing it alone would store positions past the lost chunks); the lane
        // starts again from the stored positions.
        if self.broken {
            return;
        }
        self.apply(batch);
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
                let committed_at = Utc::now();
                for (p, part) in parts.iter().zip(&batch.parts) {
                    self.applied.push((
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
                    ));
                }
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

    fn handle(&mut self, _: WriteNext, ctx: &mut SyncContext<Self>) {
        let Some(inner) = self.0.as_mut() else {
            return;
        };
        match inner.cfg.input.recv() {
            Ok(BatchMsg::Batch(batch, lease)) => {
                inner.write(batch);
                // The rows are committed (or dropped): their bytes go back to the budget.
                drop(lease);
                ctx.address().do_send(WriteNext);
            }
            Ok(BatchMsg::CaughtUp(table)) => {
                inner.caught_up(table);
                ctx.address().do_send(WriteNext);
            }
            Err(_) => {
                let lane = inner.cfg.lane;
                if inner.cfg.sink.in_transaction() {
                    // Chunks of a source transaction whose end never came: rolled back.
                    inner.cfg.sink.reset();
                }
                info!(lane, "writer finished");
                inner.cfg.events.do_send(Event::LaneFinished { lane });
                self.0 = None;
            }
        }
    }
}
