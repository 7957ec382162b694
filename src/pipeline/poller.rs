//! The poller: asks its lane's [`Source`] for the next read and streams the changes to the
//! batcher. It sees only the `Source` trait, whatever the capture mode.

use std::sync::Arc;

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use crossbeam_channel::Sender;
use tracing::{info, warn};

use super::{send, stage_runtime, Budget, Event, ReadMsg};
use crate::config::Retry;
use crate::error::Error;
use crate::model::TableId;
use crate::retry::{Decision, Retrier};
use crate::shutdown::Shutdown;
use crate::source::{After, Read, Source, Step};
use crate::telemetry::TableHandle;

/// Everything a poller needs.
pub struct PollerConfig {
    pub lane: usize,
    pub source: Box<dyn Source>,
    /// Handles of every table of the run, by table id.
    pub handles: Arc<[Arc<TableHandle>]>,
    /// The ids of this lane's tables.
    pub tables: Vec<usize>,
    pub retry: Retry,
    pub out: Sender<ReadMsg>,
    pub budget: Arc<Budget>,
    pub shutdown: Shutdown,
    pub events: Recipient<Event>,
}

struct Inner {
    cfg: PollerConfig,
    rt: tokio::runtime::Runtime,
    policy: Retrier,
}

/// `None` once finished (dropping the channel's sender ends the batcher).
pub struct Poller(Option<Inner>);

impl Poller {
    pub fn new(cfg: Option<PollerConfig>) -> Self {
        Poller(cfg.map(|cfg| Inner {
            policy: Retrier::new(&cfg.retry),
            cfg,
            rt: stage_runtime(),
        }))
    }
}

impl Actor for Poller {
    type Context = SyncContext<Self>;
}

/// Read the next step.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

/// What to do after a step.
enum Next {
    Go,
    Finish,
}

impl Inner {
    fn step(&mut self) -> Next {
        let cfg = &mut self.cfg;
        let shutdown = cfg.shutdown.clone();
        let step = self.rt.block_on(async {
            tokio::select! {
                r = cfg.source.next() => r,
                _ = shutdown.grace_over() => Err(Error::Shutdown),
            }
        });
        match step {
            Ok(Step::Read(read)) => {
                self.policy.reset();
                self.deliver(read)
            }
            Ok(Step::Txn(txn)) => {
                self.policy.reset();
                self.deliver_txn(txn)
            }
            Ok(Step::Idle) => {
                self.policy.reset();
                for &t in &self.cfg.tables {
                    self.cfg.handles[t].rows_read(0, true);
                }
                if send(&self.cfg.out, ReadMsg::Idle, &self.cfg.shutdown) {
                    Next::Go
                } else {
                    Next::Finish
                }
            }
            Ok(Step::Wait(d)) => {
                // Sleep until the next table is due, waking at once on shutdown.
                self.cfg.shutdown.wait(d);
                Next::Go
            }
            Ok(Step::Failed { table, error }) => {
                self.fail(table, Arc::new(error));
                Next::Go
            }
            Ok(Step::Finished) => {
                info!(
                    lane = self.cfg.lane,
                    "caught up with the source as of start"
                );
                Next::Finish
            }
            Err(Error::Shutdown) => Next::Finish,
            Err(e) => match self.policy.decide(&e, &self.cfg.shutdown) {
                Decision::Retry { attempt, delay } => {
                    self.cfg.source.reset();
                    warn!(lane = self.cfg.lane, attempt, delay_ms = delay.as_millis() as u64, error = %e, "source read failed; retrying");
                    for &t in &self.cfg.tables {
                        self.cfg.handles[t].retrying("poller", &e);
                    }
                    self.cfg.shutdown.wait(delay);
                    Next::Go
                }
                Decision::Stop if self.cfg.shutdown.requested() => Next::Finish,
                Decision::Stop => {
                    // Not about one table: every table of the lane stops.
                    let e = Arc::new(e);
                    for t in self.cfg.tables.clone() {
                        self.fail(t, e.clone());
                    }
                    Next::Finish
                }
            },
        }
    }

    fn deliver(&mut self, read: Read) -> Next {
        let cfg = &self.cfg;
        let h = &cfg.handles[read.table];
        let caught_up = read.after == After::CaughtUp;
        match read.changes {
            Some(set) => {
                let Some(lease) = cfg.budget.acquire(set.bytes, &cfg.shutdown) else {
                    return Next::Finish;
                };
                h.rows_read(set.changes.len(), caught_up);
                if !send(&cfg.out, ReadMsg::Changes(set, lease), &cfg.shutdown) {
                    return Next::Finish;
                }
            }
            None => h.rows_read(0, caught_up),
        }
        if read.after != After::More
            && !send(
                &cfg.out,
                ReadMsg::Flush {
                    table: read.table,
                    caught_up,
                },
                &cfg.shutdown,
            )
        {
            return Next::Finish;
        }
        Next::Go
    }

    fn deliver_txn(&mut self, txn: crate::source::Txn) -> Next {
        let cfg = &self.cfg;
        let bytes = txn.parts.iter().map(|p| p.bytes).sum();
        let Some(lease) = cfg.budget.acquire(bytes, &cfg.shutdown) else {
            return Next::Finish;
        };
        for p in &txn.parts {
            cfg.handles[p.table].rows_read(p.changes.len(), false);
        }
        if send(&cfg.out, ReadMsg::Txn(txn, lease), &cfg.shutdown) {
            Next::Go
        } else {
            Next::Finish
        }
    }

    fn fail(&self, table: TableId, error: Arc<Error>) {
        super::table_failed(&self.cfg.handles, &self.cfg.events, table, "poller", error);
    }
}

impl Handler<Poll> for Poller {
    type Result = ();

    /// Reads step after step on this thread until finished (a message per step would wake
    /// the system's thread twice per step, to relay it: thousands of times a second under a
    /// busy source).
    fn handle(&mut self, _: Poll, _: &mut SyncContext<Self>) {
        while let Some(inner) = self.0.as_mut() {
            if inner.cfg.shutdown.requested() {
                info!(lane = inner.cfg.lane, "shutdown requested: stopped reading");
                self.0 = None;
                return;
            }
            if let Next::Finish = inner.step() {
                // Dropping the sender tells the batcher no more will come.
                self.0 = None;
            }
        }
    }
}
