//! The writer's second target connection: the chunks of a copy beside the binlog stream
//! commit there, so the other tables' changes never wait behind them in the lane.
//!
//! A table copied beside the stream is not caught up: nothing reads it as a consistent
//! whole yet, so its part of a batch (its chunks, and its own changes merged after them)
//! may commit apart from the other tables' parts. Order is kept per table:
//!
//! - a part of a table with batches still on this connection goes there too, after them;
//! - a part that must commit on the lane's connection (a schema change, a transaction
//!   spanning batches) waits until the table's batches here are committed, and a table
//!   whose shape changed stays on the lane's connection (the sink here knows the shape it
//!   was made with);
//! - the source says a table is caught up only after its last chunk: that waits for this
//!   connection too.
//!
//! Each part stores its own table's position, so the two connections never store the same
//! table's position at once, and after a crash every table resumes from what its own
//! commits cover. A batch that fails here, and every batch queued after it, is applied
//! again on the lane's connection (with its retries, or stopping the table), and this
//! connection is not used again by the lane.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::{stage_runtime, Lease};
use crate::error::{Error, Result};
use crate::model::{Batch, TableId};
use crate::shutdown::Shutdown;
use crate::sink::{PartApplied, Sink};

/// Makes the sink this connection writes through, when the first chunk comes.
pub type SideSink = Box<dyn FnOnce() -> Box<dyn Sink> + Send>;

struct Job {
    batch: Batch,
    lease: Lease,
}

/// A batch sent to the side connection, back.
pub struct Outcome {
    pub batch: Batch,
    /// What its parts applied, and how long the apply took; `Err`: nothing of it committed
    /// (it failed, or came after one that did), so the lane applies it.
    pub result: Result<(Vec<PartApplied>, Duration)>,
    /// The batch's bytes: back to the budget once it is committed.
    pub lease: Lease,
}

pub struct Side {
    jobs: Option<Sender<Job>>,
    results: Receiver<Outcome>,
    /// Batches sent and not reported back yet, by table.
    outstanding: HashMap<TableId, usize>,
    /// Batches sent, and reported back, since the start.
    sent: u64,
    done: u64,
}

impl Side {
    pub fn start(lane: usize, make: SideSink, shutdown: Shutdown) -> Result<Side> {
        let (jobs, job_rx) = unbounded::<Job>();
        let (result_tx, results) = unbounded();
        std::thread::Builder::new()
            .name(format!("sluice-copy-writer-{lane}"))
            .spawn(move || run(make(), job_rx, result_tx, shutdown))
            .map_err(|e| Error::Other(format!("starting the copy's writer thread: {e}")))?;
        Ok(Side {
            jobs: Some(jobs),
            results,
            outstanding: HashMap::new(),
            sent: 0,
            done: 0,
        })
    }

    /// Whether `table` has batches here not reported back.
    pub fn holds(&self, table: TableId) -> bool {
        self.outstanding.get(&table).is_some_and(|n| *n > 0)
    }

    /// A mark that [`Side::passed`] says when every batch sent so far is reported back.
    pub fn mark(&self) -> u64 {
        self.sent
    }

    pub fn passed(&self, mark: u64) -> bool {
        self.done >= mark
    }

    /// Batches sent and not reported back.
    pub fn busy(&self) -> bool {
        self.sent > self.done
    }

    /// Whether batches may still be sent (no batch here failed).
    pub fn open(&self) -> bool {
        self.jobs.is_some()
    }

    /// Sends `batch` to be committed here. `Err` gives it back when this connection is no
    /// longer open.
    pub fn send(&mut self, batch: Batch, lease: Lease) -> std::result::Result<(), (Batch, Lease)> {
        let Some(jobs) = &self.jobs else {
            return Err((batch, lease));
        };
        let tables: Vec<TableId> = batch.parts.iter().map(|p| p.table).collect();
        match jobs.send(Job { batch, lease }) {
            Ok(()) => {
                for t in tables {
                    *self.outstanding.entry(t).or_default() += 1;
                }
                self.sent += 1;
                Ok(())
            }
            Err(e) => {
                self.jobs = None;
                let Job { batch, lease } = e.into_inner();
                Err((batch, lease))
            }
        }
    }

    /// The channel outcomes come back on (to wait on it beside the lane's input).
    pub fn results(&self) -> Receiver<Outcome> {
        self.results.clone()
    }

    /// The next outcome, waiting for it when `block` (`None` when nothing is out, or none
    /// is ready; when blocking, `None` with batches out means the thread ended without
    /// them: they are lost, and only reading the source again brings them back).
    pub fn next(&mut self, block: bool) -> Option<Outcome> {
        if !self.busy() {
            return None;
        }
        let o = if block {
            self.results.recv().ok()
        } else {
            self.results.try_recv().ok()
        };
        match o {
            Some(o) => Some(self.received(o)),
            None if block => {
                // The thread is gone without reporting (it panicked): nothing more comes.
                self.done = self.sent;
                self.outstanding.clear();
                self.jobs = None;
                None
            }
            None => None,
        }
    }

    /// Counts an outcome taken off [`Side::results`] directly.
    pub fn received(&mut self, o: Outcome) -> Outcome {
        self.done += 1;
        for p in &o.batch.parts {
            if let Some(n) = self.outstanding.get_mut(&p.table) {
                *n = n.saturating_sub(1);
            }
        }
        if o.result.is_err() {
            // Nothing more goes here: what is queued comes back unapplied, in order.
            self.jobs = None;
        }
        o
    }
}

fn run(mut sink: Box<dyn Sink>, jobs: Receiver<Job>, results: Sender<Outcome>, shutdown: Shutdown) {
    let rt = stage_runtime();
    let mut failed = false;
    for Job { batch, lease } in jobs.iter() {
        let result = if failed {
            Err(Error::Other(
                "not applied on the copy's connection: a batch before it failed there".into(),
            ))
        } else {
            let started = Instant::now();
            let shutdown = shutdown.clone();
            let r = rt.block_on(async {
                tokio::select! {
                    r = sink.apply(&batch) => r,
                    _ = shutdown.grace_over() => Err(Error::Shutdown),
                }
            });
            if r.is_err() {
                sink.reset();
                failed = true;
            }
            r.map(|parts| (parts, started.elapsed()))
        };
        if results
            .send(Outcome {
                batch,
                result,
                lease,
            })
            .is_err()
        {
            break;
        }
    }
}
