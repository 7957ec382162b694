//! The batcher: groups rows into batches, flushing when a batch is full, when `linger` has
//! passed since its first row, when the source says it is caught up, and at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Handler, Message, SyncContext};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Batch, BatchMsg, RowMsg};
use crate::source::schema::TableSchema;

#[derive(Clone)]
pub struct BatcherConfig {
    pub table: Arc<TableSchema>,
    pub batch_rows: usize,
    pub linger: Duration,
    pub rows: Receiver<RowMsg>,
    /// Rows the poller sent and the batcher has not taken yet.
    pub in_flight: Arc<AtomicUsize>,
    pub batches: Sender<BatchMsg>,
}

pub struct Batcher {
    cfg: BatcherConfig,
    done: bool,
    /// `CaughtUp` was passed on and no batch has been sent since: an idle source's
    /// repeated caught-up flushes are passed on once.
    caught_up_sent: bool,
}

/// One collected batch and what ended it.
struct Collected {
    rows: Vec<crate::value::Row>,
    /// The source said it is caught up.
    caught_up: bool,
    /// The stream ended.
    ended: bool,
}

impl Batcher {
    pub fn new(cfg: BatcherConfig) -> Self {
        Batcher {
            cfg,
            done: false,
            caught_up_sent: false,
        }
    }

    fn take(&self, page: &[crate::value::Row]) {
        self.cfg.in_flight.fetch_sub(page.len(), Ordering::Relaxed);
    }

    /// Collects the rows of one batch (possibly none; possibly more than `batch_rows`, when
    /// the last page overshoots: the caller splits them).
    fn collect(&self) -> Collected {
        let end = |rows, caught_up, ended| Collected {
            rows,
            caught_up,
            ended,
        };
        // Wait as long as it takes for the first page; the linger clock starts there.
        let mut rows = match self.cfg.rows.recv() {
            Ok(RowMsg::Rows(page)) => page,
            Ok(RowMsg::Flush { caught_up }) => return end(Vec::new(), caught_up, false),
            Ok(RowMsg::End) | Err(_) => return end(Vec::new(), false, true),
        };
        self.take(&rows);
        rows.reserve(self.cfg.batch_rows.saturating_sub(rows.len()));
        let deadline = Instant::now() + self.cfg.linger;
        while rows.len() < self.cfg.batch_rows {
            match self.cfg.rows.recv_deadline(deadline) {
                Ok(RowMsg::Rows(mut page)) => {
                    self.take(&page);
                    rows.append(&mut page);
                }
                Ok(RowMsg::Flush { caught_up }) => return end(rows, caught_up, false),
                Err(RecvTimeoutError::Timeout) => break,
                Ok(RowMsg::End) | Err(RecvTimeoutError::Disconnected) => {
                    return end(rows, false, true)
                }
            }
        }
        end(rows, false, false)
    }
}

impl Actor for Batcher {
    type Context = SyncContext<Self>;
}

/// Build and send the next batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NextBatch;

impl Handler<NextBatch> for Batcher {
    type Result = ();

    fn handle(&mut self, _: NextBatch, ctx: &mut SyncContext<Self>) {
        if self.done {
            return;
        }
        let Collected {
            mut rows,
            caught_up,
            ended,
        } = self.collect();
        while !rows.is_empty() {
            let rest = if rows.len() > self.cfg.batch_rows {
                rows.split_off(self.cfg.batch_rows)
            } else {
                Vec::new()
            };
            let position = self.cfg.table.key_of(rows.last().expect("not empty"));
            if self
                .cfg
                .batches
                .send(BatchMsg::Batch(Batch { rows, position }))
                .is_err()
            {
                self.done = true;
                return;
            }
            crate::telemetry::batch_queued(&self.cfg.table.name, self.cfg.batches.len());
            self.caught_up_sent = false;
            rows = rest;
        }
        if caught_up && !self.caught_up_sent {
            if self.cfg.batches.send(BatchMsg::CaughtUp).is_err() {
                self.done = true;
                return;
            }
            self.caught_up_sent = true;
        }
        if ended {
            self.done = true;
            let _ = self.cfg.batches.send(BatchMsg::End);
            return;
        }
        ctx.address().do_send(NextBatch);
    }
}
