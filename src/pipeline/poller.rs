//! The poller: reads keyset pages past the watermark and streams their rows to the batcher.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Handler, Message, Recipient, SyncContext};
use crossbeam_channel::Sender;
use tracing::{info, warn};

use super::{stage_runtime, Backoff, Event, RowMsg, ShutdownSignal};
use crate::config::Retry;
use crate::source::mysql::{self, KeysetPoller};
use crate::source::schema::TableSchema;
use crate::source::Source;
use crate::value::Value;

/// Everything a poller needs; cloned by the `SyncArbiter` factory.
#[derive(Clone)]
pub struct PollerConfig {
    pub table: Arc<TableSchema>,
    pub source_url: String,
    pub start: Option<Vec<Value>>,
    pub once: bool,
    pub page_rows: usize,
    pub poll_interval: Duration,
    pub safety_lag: Duration,
    pub retry: Retry,
    pub rows: Sender<RowMsg>,
    /// Rows sent to the batcher and not yet taken (for the `sluice_channel_rows` gauge).
    pub in_flight: Arc<AtomicUsize>,
    pub shutdown: ShutdownSignal,
    pub events: Recipient<Event>,
}

pub struct Poller {
    cfg: PollerConfig,
    rt: tokio::runtime::Runtime,
    source: Option<KeysetPoller>,
    /// Position of the last row sent downstream; where a reconnected reader resumes.
    position: Option<Vec<Value>>,
    backoff: Backoff,
    done: bool,
}

impl Poller {
    pub fn new(cfg: PollerConfig) -> Self {
        Poller {
            position: cfg.start.clone(),
            backoff: Backoff::new(&cfg.retry),
            cfg,
            rt: stage_runtime(),
            source: None,
            done: false,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        let _ = self.cfg.rows.send(RowMsg::End);
    }

    /// One page.
    fn poll_once(&mut self) -> crate::error::Result<Polled> {
        if self.source.is_none() {
            let cfg = &self.cfg;
            let position = self.position.clone();
            self.source = Some(self.rt.block_on(async {
                let conn = mysql::connect(&cfg.source_url).await?;
                KeysetPoller::new(conn, cfg.table.clone(), position, cfg.once, cfg.safety_lag).await
            })?);
        }
        let source = self.source.as_mut().expect("connected above");
        let page = self.rt.block_on(source.read(self.cfg.page_rows))?;
        crate::failpoint::hit("after_read");
        self.position = source.position().map(<[Value]>::to_vec);
        let (table, n) = (&self.cfg.table.name, page.rows.len());
        if n > 0 {
            self.cfg.in_flight.fetch_add(n, Ordering::Relaxed);
            if self.cfg.rows.send(RowMsg::Rows(page.rows)).is_err() {
                return Ok(Polled {
                    caught_up: true,
                    wait: true,
                });
            }
        }
        crate::telemetry::rows_read(
            table,
            n,
            page.caught_up,
            self.cfg.in_flight.load(Ordering::Relaxed),
        );
        if page.caught_up || page.held {
            let _ = self.cfg.rows.send(RowMsg::Flush {
                caught_up: page.caught_up,
            });
        }
        Ok(Polled {
            caught_up: page.caught_up,
            wait: page.caught_up || page.held,
        })
    }
}

/// What one page told the poller.
struct Polled {
    /// The source has no more rows (as of start, with `--once`).
    caught_up: bool,
    /// Sleep for the poll interval before the next read.
    wait: bool,
}

impl Actor for Poller {
    type Context = SyncContext<Self>;
}

/// Read the next page.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

impl Handler<Poll> for Poller {
    type Result = ();

    fn handle(&mut self, _: Poll, ctx: &mut SyncContext<Self>) {
        if self.done {
            return;
        }
        if self.cfg.shutdown.requested() {
            info!(table = %self.cfg.table.name, "shutdown requested: stopped reading");
            return self.finish();
        }
        let table = self.cfg.table.name.clone();
        match self.poll_once() {
            Ok(Polled { caught_up, wait }) => {
                self.backoff.reset();
                if caught_up && self.cfg.once {
                    info!(table = %table, "caught up with the source as of start");
                    return self.finish();
                }
                if wait {
                    // Sleep until the next poll, waking at once on shutdown.
                    self.cfg.shutdown.wait(self.cfg.poll_interval);
                }
            }
            Err(e) if e.is_retryable() => {
                self.source = None;
                let (attempt, delay) = self.backoff.next_delay();
                warn!(table = %table, attempt, delay_ms = delay.as_millis() as u64, error = %e, "source read failed; retrying");
                self.cfg.events.do_send(Event::Retrying {
                    table,
                    stage: "poller",
                    error: e.to_string(),
                    attempt,
                    delay,
                });
                self.cfg.shutdown.wait(delay);
            }
            Err(e) => {
                self.cfg.events.do_send(Event::Failed {
                    table,
                    stage: "poller",
                    exit_code: e.exit_code(),
                    error: e.to_string(),
                });
                return self.finish();
            }
        }
        ctx.address().do_send(Poll);
    }
}
