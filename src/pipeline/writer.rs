//! The writer: applies each batch and advances the watermark in one PostgreSQL
//! transaction, retrying transient failures with backoff.

use std::sync::Arc;

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use chrono::Utc;
use crossbeam_channel::Receiver;
use tracing::{debug, error, info, warn};

use super::{stage_runtime, Backoff, Batch, BatchMsg, Event};
use crate::config::{OnBadRow, Retry};
use crate::error::Result;
use crate::sink::{self, PgWriter};
use crate::source::schema::TableSchema;

#[derive(Clone)]
pub struct WriterConfig {
    pub table: Arc<TableSchema>,
    pub target_url: String,
    pub target_schema: String,
    pub retry: Retry,
    pub on_bad_row: OnBadRow,
    /// The primary-key constraint an initial load dropped: built at the first `CaughtUp`.
    pub deferred_key: Option<String>,
    pub copy_format: crate::config::CopyFormat,
    pub batches: Receiver<BatchMsg>,
    pub events: Recipient<Event>,
}

pub struct Writer {
    cfg: WriterConfig,
    rt: tokio::runtime::Runtime,
    sink: Option<PgWriter>,
    /// Set after a permanent failure: later batches are drained and dropped (they are
    /// past the committed watermark, so a restart reads them again).
    failed: bool,
    done: bool,
    /// Still to build (see [`WriterConfig::deferred_key`]); `None` once built.
    deferred_key: Option<String>,
}

/// One unit of target work, retried as a whole.
enum Job<'a> {
    Write(&'a Batch),
    BuildKey,
}

enum Done {
    Written(sink::WriteOutcome),
    KeyBuilt(Option<sink::KeyBuilt>),
}

impl Writer {
    pub fn new(cfg: WriterConfig) -> Self {
        Writer {
            deferred_key: cfg.deferred_key.clone(),
            cfg,
            rt: stage_runtime(),
            sink: None,
            failed: false,
            done: false,
        }
    }

    fn attempt(&mut self, job: &Job) -> Result<Done> {
        if self.sink.is_none() {
            let conn = self.rt.block_on(sink::connect(&self.cfg.target_url))?;
            self.sink = Some(PgWriter::new(
                conn,
                self.cfg.table.clone(),
                &self.cfg.target_schema,
                self.cfg.on_bad_row,
                self.deferred_key.clone(),
                self.cfg.copy_format,
            ));
        }
        let sink = self.sink.as_mut().expect("connected above");
        match job {
            Job::Write(batch) => self
                .rt
                .block_on(sink.write(&batch.rows, &batch.position))
                .map(Done::Written),
            Job::BuildKey => {
                let built = self.rt.block_on(sink.build_key())?;
                if built.is_some() {
                    self.deferred_key = None;
                }
                Ok(Done::KeyBuilt(built))
            }
        }
    }

    /// Runs a job, retrying transient errors until it succeeds or fails for good. A
    /// permanent failure is recorded, reported to the supervisor, and stops the table.
    fn run(&mut self, job: Job) -> Option<Done> {
        let table = self.cfg.table.name.clone();
        let mut backoff = Backoff::new(&self.cfg.retry);
        loop {
            match self.attempt(&job) {
                Ok(done) => return Some(done),
                Err(e) if e.is_retryable() => {
                    // The connection may be broken; a fresh one is opened for the retry.
                    self.sink = None;
                    let (attempt, delay) = backoff.next_delay();
                    warn!(table = %table, attempt, delay_ms = delay.as_millis() as u64, error = %e, "target write failed; retrying");
                    self.cfg.events.do_send(Event::Retrying {
                        table: table.clone(),
                        stage: "writer",
                        error: e.to_string(),
                        attempt,
                        delay,
                    });
                    std::thread::sleep(delay);
                }
                Err(e) => {
                    error!(table = %table, error = %e, "target write failed; stopping this table");
                    if let Some(sink) = self.sink.as_mut() {
                        if let Err(e2) = self.rt.block_on(sink.record_error(&e.to_string())) {
                            warn!(table = %table, error = %e2, "could not record the error in the state table");
                        }
                    }
                    self.failed = true;
                    self.cfg.events.do_send(Event::Failed {
                        table,
                        stage: "writer",
                        exit_code: e.exit_code(),
                        error: e.to_string(),
                    });
                    return None;
                }
            }
        }
    }

    /// Builds the initial load's deferred primary key, if there is one.
    fn build_key(&mut self) {
        if self.deferred_key.is_none() {
            return;
        }
        let table = self.cfg.table.name.clone();
        info!(table = %table, "caught up: building the primary key deferred by the initial load");
        let started = std::time::Instant::now();
        if let Some(Done::KeyBuilt(Some(built))) = self.run(Job::BuildKey) {
            info!(
                table = %table,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                older_copies_removed = built.duplicates_removed,
                "primary key built: the initial load is over"
            );
        }
    }

    /// Writes a batch, retrying transient errors until it commits or fails for good.
    fn write(&mut self, batch: Batch) {
        let table = self.cfg.table.name.clone();
        let started = std::time::Instant::now();
        let Some(Done::Written(outcome)) = self.run(Job::Write(&batch)) else {
            return;
        };
        crate::telemetry::write_seconds(&table, started.elapsed());
        crate::failpoint::hit("after_commit");
        debug!(table = %table, rows = outcome.rows, merged = outcome.merged, ms = started.elapsed().as_millis() as u64, "batch committed");
        let newest = batch.position.first().and_then(|v| v.as_utc());
        self.cfg.events.do_send(Event::Committed {
            table,
            rows: outcome.rows,
            merged: outcome.merged,
            dead_lettered: outcome.dead_lettered,
            newest,
            committed_at: Utc::now(),
        });
    }
}

impl Actor for Writer {
    type Context = SyncContext<Self>;
}

/// Take the next batch off the channel and write it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteNext;

impl Handler<WriteNext> for Writer {
    type Result = ();

    fn handle(&mut self, _: WriteNext, ctx: &mut SyncContext<Self>) {
        if self.done {
            return;
        }
        match self.cfg.batches.recv() {
            Ok(BatchMsg::Batch(batch)) => {
                if !self.failed {
                    self.write(batch);
                }
                ctx.address().do_send(WriteNext);
            }
            Ok(BatchMsg::CaughtUp) => {
                if !self.failed {
                    self.build_key();
                }
                ctx.address().do_send(WriteNext);
            }
            Ok(BatchMsg::End) | Err(_) => {
                self.done = true;
                if self.deferred_key.is_some() && !self.failed {
                    info!(table = %self.cfg.table.name, "stopped before the initial load caught up: the primary key stays deferred, and the next run goes on loading and then builds it");
                }
                info!(table = %self.cfg.table.name, "writer finished");
                self.cfg.events.do_send(Event::Finished {
                    table: self.cfg.table.name.clone(),
                });
            }
        }
    }
}
