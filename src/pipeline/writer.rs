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
}

impl Writer {
    pub fn new(cfg: WriterConfig) -> Self {
        Writer {
            cfg,
            rt: stage_runtime(),
            sink: None,
            failed: false,
            done: false,
        }
    }

    fn write_once(&mut self, batch: &Batch) -> Result<sink::WriteOutcome> {
        if self.sink.is_none() {
            let conn = self.rt.block_on(sink::connect(&self.cfg.target_url))?;
            self.sink = Some(PgWriter::new(
                conn,
                self.cfg.table.clone(),
                &self.cfg.target_schema,
                self.cfg.on_bad_row,
            ));
        }
        let sink = self.sink.as_mut().expect("connected above");
        self.rt.block_on(sink.write(&batch.rows, &batch.position))
    }

    /// Writes a batch, retrying transient errors until it commits or fails for good.
    fn write(&mut self, batch: Batch) {
        let table = self.cfg.table.name.clone();
        let mut backoff = Backoff::new(&self.cfg.retry);
        loop {
            let started = std::time::Instant::now();
            match self.write_once(&batch) {
                Ok(outcome) => {
                    crate::telemetry::write_seconds(&table, started.elapsed());
                    crate::failpoint::hit("after_commit");
                    debug!(table = %table, rows = outcome.rows, merged = outcome.merged, "batch committed");
                    let newest = batch.position.first().and_then(|v| v.as_utc());
                    self.cfg.events.do_send(Event::Committed {
                        table,
                        rows: outcome.rows,
                        merged: outcome.merged,
                        dead_lettered: outcome.dead_lettered,
                        newest,
                        committed_at: Utc::now(),
                    });
                    return;
                }
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
                    return;
                }
            }
        }
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
            Ok(BatchMsg::End) | Err(_) => {
                self.done = true;
                info!(table = %self.cfg.table.name, "writer finished");
                self.cfg.events.do_send(Event::Finished {
                    table: self.cfg.table.name.clone(),
                });
            }
        }
    }
}
