//! The batcher: groups rows into batches, flushing when a batch is full, when `linger` has
//! passed since its first row, when the source says it is caught up, and at the end.

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

    /// Collects one batch (possibly empty).
    fn collect(&self) -> Collected {
        let mut rows = Vec::new();
        let end = |rows, caught_up, ended| Collected {
            rows,
            caught_up,
            ended,
        };
        // Wait as long as it takes for the first row; the linger clock starts there.
        let first = match self.cfg.rows.recv() {
            Ok(RowMsg::Row(r)) => r,
            Ok(RowMsg::Flush { caught_up }) => return end(rows, caught_up, false),
            Ok(RowMsg::End) | Err(_) => return end(rows, false, true),
        };
        rows.reserve(self.cfg.batch_rows.min(65_536));
        rows.push(first);
        let deadline = Instant::now() + self.cfg.linger;
        while rows.len() < self.cfg.batch_rows {
            match self.cfg.rows.recv_deadline(deadline) {
                Ok(RowMsg::Row(r)) => rows.push(r),
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
            rows,
            caught_up,
            ended,
        } = self.collect();
        if let Some(last) = rows.last() {
            let position = self.cfg.table.key_of(last);
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
