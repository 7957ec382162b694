//! The supervisor: starts each table's poller, batcher and writer, collects their events,
//! and decides when the run is over (all writers finished) and how it ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, MessageResult, SyncArbiter,
};
use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Sender};
use tokio::sync::oneshot;
use tracing::{error, info};

use super::batcher::{Batcher, BatcherConfig, NextBatch};
use super::poller::{Poll, Poller, PollerConfig};
use super::writer::{WriteNext, Writer, WriterConfig};
use super::{Event, ShutdownSignal};
use crate::config::Settings;
use crate::source::schema::TableSchema;
use crate::value::Value;

/// Largest keyset page read at once.
pub const MAX_PAGE_ROWS: usize = 10_000;

/// Per-table counters, as the supervisor sees them.
#[derive(Debug, Clone, Default)]
pub struct TableStats {
    pub rows_written: u64,
    pub batches: u64,
    pub merged_batches: u64,
    pub retries: u64,
    /// Rows written to `sluice.dead_letters`.
    pub dead_lettered: u64,
    /// Commit time minus cursor time of the newest row of the last batch.
    pub last_lag: Option<Duration>,
    pub last_commit: Option<DateTime<Utc>>,
    pub finished: bool,
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub tables: BTreeMap<String, TableStats>,
    /// The first permanent error and its exit code.
    pub failure: Option<(String, i32)>,
}

/// One table ready to replicate: its schema and stored watermark.
pub struct TablePlan {
    pub schema: Arc<TableSchema>,
    pub start: Option<Vec<Value>>,
    /// The primary-key constraint an initial load dropped, to build once caught up.
    pub deferred_key: Option<String>,
}

pub struct Supervisor {
    settings: Settings,
    once: bool,
    plans: Vec<TablePlan>,
    shutdown_tx: Option<Sender<()>>,
    shutdown: ShutdownSignal,
    stats: BTreeMap<String, TableStats>,
    failure: Option<(String, i32)>,
    done: Option<oneshot::Sender<RunOutcome>>,
    /// The stages' addresses. A `SyncArbiter` stops its threads once no address to it is
    /// left, so the supervisor holds them for the life of the run.
    stages: Vec<StageAddrs>,
}

struct StageAddrs {
    _poller: Addr<Poller>,
    _batcher: Addr<Batcher>,
    _writer: Addr<Writer>,
}

impl Supervisor {
    pub fn new(
        settings: Settings,
        once: bool,
        plans: Vec<TablePlan>,
        done: oneshot::Sender<RunOutcome>,
    ) -> Self {
        let (tx, rx) = bounded::<()>(0);
        Supervisor {
            settings,
            once,
            stats: plans
                .iter()
                .map(|p| (p.schema.name.clone(), TableStats::default()))
                .collect(),
            plans,
            shutdown_tx: Some(tx),
            shutdown: ShutdownSignal(rx),
            failure: None,
            done: Some(done),
            stages: Vec::new(),
        }
    }

    fn start_table(&self, plan: &TablePlan, me: Addr<Supervisor>) -> StageAddrs {
        let p = &self.settings.pipeline;
        // Reads go in pages of at most MAX_PAGE_ROWS whatever the batch size: a page is
        // held whole while it is decoded, so this bounds the reader's memory.
        let page_rows = p.batch_rows.min(MAX_PAGE_ROWS);
        // One page may wait between poller and batcher while the next is read.
        let (rows_tx, rows_rx) = bounded(1);
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (batch_tx, batch_rx) = bounded(p.channel_capacity);
        let poller = PollerConfig {
            table: plan.schema.clone(),
            source_url: self.settings.source_url.clone(),
            start: plan.start.clone(),
            once: self.once,
            page_rows,
            poll_interval: Duration::from_millis(p.poll_interval_ms),
            safety_lag: Duration::from_millis(self.settings.safety_lag_ms),
            retry: self.settings.retry.clone(),
            rows: rows_tx,
            in_flight: in_flight.clone(),
            shutdown: self.shutdown.clone(),
            events: me.clone().recipient(),
        };
        let batcher = BatcherConfig {
            table: plan.schema.clone(),
            batch_rows: p.batch_rows,
            linger: Duration::from_millis(p.linger_ms),
            rows: rows_rx,
            in_flight,
            batches: batch_tx,
        };
        let writer = WriterConfig {
            table: plan.schema.clone(),
            target_url: self.settings.target_url.clone(),
            target_schema: self.settings.target_schema.clone(),
            retry: self.settings.retry.clone(),
            on_bad_row: p.on_bad_row,
            deferred_key: plan.deferred_key.clone(),
            copy_format: p.copy_format,
            batches: batch_rx,
            events: me.recipient(),
        };
        let writer = SyncArbiter::start(1, move || Writer::new(writer.clone()));
        writer.do_send(WriteNext);
        let batcher = SyncArbiter::start(1, move || Batcher::new(batcher.clone()));
        batcher.do_send(NextBatch);
        let poller = SyncArbiter::start(1, move || Poller::new(poller.clone()));
        poller.do_send(Poll);
        match &plan.start {
            Some(pos) => info!(
                table = %plan.schema.name,
                after = %pos.iter().map(|v| v.display()).collect::<Vec<_>>().join(", "),
                "replicating, resuming after the stored watermark"
            ),
            None => info!(table = %plan.schema.name, "replicating from the beginning"),
        }
        if let Some(key) = &plan.deferred_key {
            info!(table = %plan.schema.name, constraint = %key, "initial load: the target's primary key is deferred, and built once the source is caught up");
        }
        StageAddrs {
            _poller: poller,
            _batcher: batcher,
            _writer: writer,
        }
    }

    fn request_shutdown(&mut self) {
        if self.shutdown_tx.take().is_some() {
            info!("stopping: finishing the batches in flight");
        }
    }

    fn finish_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.stats.values().all(|s| s.finished) {
            if let Some(done) = self.done.take() {
                let _ = done.send(RunOutcome {
                    tables: self.stats.clone(),
                    failure: self.failure.clone(),
                });
            }
            ctx.stop();
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.stages = self
            .plans
            .iter()
            .map(|plan| self.start_table(plan, me.clone()))
            .collect();
        if self.plans.is_empty() {
            self.finish_if_done(ctx);
        }
    }
}

impl Handler<Event> for Supervisor {
    type Result = ();

    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        crate::telemetry::on_event(&ev);
        match ev {
            Event::Committed {
                table,
                rows,
                merged,
                dead_lettered,
                newest,
                committed_at,
            } => {
                let s = self.stats.entry(table).or_default();
                s.dead_lettered += dead_lettered as u64;
                s.rows_written += rows as u64;
                s.batches += 1;
                s.merged_batches += u64::from(merged);
                s.last_commit = Some(committed_at);
                s.last_lag = newest.and_then(|n| (committed_at - n).to_std().ok());
                s.error = None;
            }
            Event::Retrying { table, error, .. } => {
                let s = self.stats.entry(table).or_default();
                s.retries += 1;
                s.error = Some(error);
            }
            Event::Failed {
                table,
                stage,
                error,
                exit_code,
            } => {
                error!(table = %table, stage, error = %error, "table stopped");
                let s = self.stats.entry(table.clone()).or_default();
                s.error = Some(error.clone());
                if self.failure.is_none() {
                    self.failure = Some((format!("table {table:?}: {error}"), exit_code));
                }
                self.request_shutdown();
            }
            Event::Finished { table } => {
                self.stats.entry(table).or_default().finished = true;
                self.finish_if_done(ctx);
            }
        }
    }
}

/// Stop reading, write what is in flight, then finish (SIGINT/SIGTERM).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.request_shutdown();
    }
}

/// A snapshot of the per-table counters.
#[derive(Message)]
#[rtype(result = "BTreeMap<String, TableStats>")]
pub struct GetStats;

impl Handler<GetStats> for Supervisor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats.clone())
    }
}
