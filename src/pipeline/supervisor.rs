//! The supervisor: spreads the tables over lanes, starts each lane's poller, batcher and
//! writer, watches table ownership, and decides what a table's failure does
//! (`[pipeline] on_table_error`) and when the run is over (every lane finished).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, SyncArbiter,
    WrapFuture,
};
use crossbeam_channel::bounded;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::batcher::{Batcher, BatcherConfig, NextBatch};
use super::poller::{Poll, Poller, PollerConfig};
use super::writer::{WriteNext, Writer, WriterConfig};
use super::{Budget, Event};
use crate::config::{OnTableError, Settings};
use crate::conn::SharedHelpers;
use crate::error::Error;
use crate::model::{Position, TableId};
use crate::shutdown::Shutdown;
use crate::sink::{SinkFactory, SinkTable};
use crate::source::capture::{Mode, SourcePosition};
use crate::source::{OpenTable, TablePlan};
use crate::state::ownership::Ownership;
use crate::state::StateKey;
use crate::telemetry::TableHandle;

/// One table ready to replicate.
pub struct PlannedTable {
    pub plan: Arc<TablePlan>,
    /// The stored position to resume after.
    pub start: Option<Position>,
    /// The primary-key constraint an initial load dropped, to build once caught up.
    pub deferred_key: Option<String>,
    /// The ownership epoch this process holds.
    pub epoch: i64,
    pub handle: Arc<TableHandle>,
}

/// How one table's run ended.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub name: String,
    pub rows_written: u64,
    pub batches: u64,
    pub dead_lettered: u64,
    /// The error that stopped it, if one did.
    pub failed: Option<Arc<Error>>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub tables: Vec<TableSummary>,
}

impl RunOutcome {
    pub fn rows_written(&self) -> u64 {
        self.tables.iter().map(|t| t.rows_written).sum()
    }

    /// The tables that stopped with an error.
    pub fn failures(&self) -> impl Iterator<Item = &TableSummary> {
        self.tables.iter().filter(|t| t.failed.is_some())
    }
}

/// Builds a `SyncArbiter` factory that hands its one actor the configuration once (the
/// factory runs once per thread, and stages never restart their actor).
fn once<C, A>(cfg: C, make: fn(Option<C>) -> A) -> impl Fn() -> A {
    let slot = Mutex::new(Some(cfg));
    move || make(slot.lock().unwrap_or_else(|p| p.into_inner()).take())
}

/// What the supervisor is handed beside its tables: how to make each lane's sink, and the
/// helpers' connections through which it records a table's error and reads positions.
pub struct Wiring {
    pub sinks: SinkFactory,
    pub helpers: SharedHelpers,
}

pub struct Supervisor {
    settings: Settings,
    wiring: Wiring,
    once: bool,
    tables: Vec<PlannedTable>,
    ownership: Option<Ownership>,
    shutdown: Shutdown,
    done: Option<oneshot::Sender<RunOutcome>>,
    lanes: Vec<Lane>,
    lanes_left: usize,
    /// Errors being recorded in the state table: the run ends once they are.
    recording: usize,
    budget: Option<Arc<Budget>>,
}

/// One lane: its tables, its own shutdown (requested with the run's, or alone to restart it),
/// and its stages' addresses. A `SyncArbiter` stops its threads once no address to it is
/// left, so the supervisor holds them while the lane runs.
struct Lane {
    ids: Vec<usize>,
    shutdown: Shutdown,
    /// Stopping to start again from the stored positions.
    restarting: bool,
    _stages: Option<LaneAddrs>,
}

/// The addresses of one lane's stages.
type LaneAddrs = (Addr<Poller>, Addr<Batcher>, Addr<Writer>);

impl Supervisor {
    pub fn new(
        settings: Settings,
        wiring: Wiring,
        once: bool,
        tables: Vec<PlannedTable>,
        ownership: Ownership,
        shutdown: Shutdown,
        done: oneshot::Sender<RunOutcome>,
    ) -> Self {
        Supervisor {
            settings,
            wiring,
            once,
            tables,
            ownership: Some(ownership),
            shutdown,
            done: Some(done),
            lanes: Vec::new(),
            lanes_left: 0,
            recording: 0,
            budget: None,
        }
    }

    fn handles(&self) -> Arc<[Arc<TableHandle>]> {
        self.tables.iter().map(|t| t.handle.clone()).collect()
    }

    /// A shutdown for one lane, requested with the run's.
    fn lane_shutdown(&self) -> Shutdown {
        let (run, lane) = (self.shutdown.clone(), Shutdown::new());
        let l = lane.clone();
        actix::spawn(async move {
            run.requested_async().await;
            l.request();
        });
        lane
    }

    fn start_lane(
        &self,
        lane: usize,
        handles: &Arc<[Arc<TableHandle>]>,
        me: &Addr<Supervisor>,
    ) -> Result<LaneAddrs, Error> {
        let p = &self.settings.pipeline;
        let ids = self.lanes[lane].ids.clone();
        let shutdown = self.lanes[lane].shutdown.clone();
        let budget = self.budget.clone().expect("set before lanes start");
        let names: Vec<&str> = self.tables.iter().map(|t| t.handle.name.as_str()).collect();
        let map = |id| crate::sink::postgres::map::TableMap::for_table(&self.settings, id);
        let fks: Vec<(TableId, Vec<crate::model::ForeignKey>)> = ids
            .iter()
            .map(|&id| {
                let (plan, child) = (&self.tables[id].plan, map(id));
                let mut keys = plan.foreign_keys(&names);
                keys.retain(|fk| match child.blocks_foreign_key(plan.model(), fk, &map(fk.parent)) {
                    None => true,
                    Some(why) => {
                        warn!(table = %plan.model().name, foreign_key = %fk.name, "this foreign key cannot be mirrored through the column mapping ({why}), so its cascade is not applied on the target: rows of this table that the source deletes or changes through it (no binlog event says so) stay unchanged on the target. Change the mapping, or repair the table from time to time (`sluice verify --table {} --repair`, or [verify] repair = true)", plan.model().name);
                        false
                    }
                });
                (id, keys)
            })
            .collect();
        let ordered = crate::source::ordered_tables(fks.iter().map(|(id, k)| (*id, k.as_slice())));
        let open: Vec<OpenTable> = ids
            .iter()
            .map(|&id| OpenTable {
                id,
                ordered: ordered.contains(&id),
                plan: self.tables[id].plan.clone(),
                start: self.tables[id].start.clone(),
                handle: self.tables[id].handle.clone(),
                deferred_key: self.tables[id].deferred_key.is_some(),
            })
            .collect();
        let held: crate::source::HeldBytes = {
            let budget = budget.clone();
            Arc::new(move || budget.used())
        };
        let source = crate::source::open(&self.settings, self.once, open, held)?;
        let sink_tables: Vec<SinkTable> = ids
            .iter()
            .map(|&id| {
                let t = &self.tables[id];
                SinkTable {
                    id,
                    model: t.plan.model().clone(),
                    epoch: t.epoch,
                    deferred_key: t.deferred_key.clone(),
                    version_columns: t.plan.version_columns(),
                    foreign_keys: fks
                        .iter()
                        .find(|(fid, _)| *fid == id)
                        .map(|(_, k)| k.clone())
                        .unwrap_or_default(),
                    loading: t.plan.will_load(t.start.as_ref()),
                    on_drop_column: self
                        .settings
                        .tables
                        .get(id)
                        .and_then(|c| c.on_drop_column)
                        .unwrap_or(p.on_drop_column),
                    handle: t.handle.clone(),
                    map: crate::sink::postgres::map::TableMap::for_table(&self.settings, id),
                }
            })
            .collect();
        // The copy's connection (see `side`) writes the tables that keep no order with
        // others: a copy beside the binlog stream's chunks, made when the first one comes.
        let side_tables: Vec<SinkTable> = sink_tables
            .iter()
            .filter(|t| !ordered.contains(&t.id))
            .cloned()
            .collect();
        // One target connection more than the lanes' and the helpers' (see
        // `PipelineSection::lanes`), while a copy runs: only where the limit leaves room.
        let verify = usize::from(self.settings.verify.interval_s > 0);
        let room = p.max_target_connections > self.lanes.len() + 3 + verify;
        let side: Option<super::side::SideSink> = (room && !side_tables.is_empty()).then(|| {
            let make = self.wiring.sinks.clone();
            Box::new(move || make(format!("copy writer {lane}"), side_tables))
                as super::side::SideSink
        });
        let sink = (self.wiring.sinks)(format!("writer {lane}"), sink_tables);
        // One read may wait between poller and batcher while the next is read.
        let (read_tx, read_rx) = bounded(1);
        let (batch_tx, batch_rx) = bounded(p.channel_capacity);
        let writer = WriterConfig {
            lane,
            sink,
            input: batch_rx,
            handles: handles.clone(),
            retry: self.settings.retry.clone(),
            shutdown: shutdown.clone(),
            events: me.clone().recipient(),
            side,
        };
        let batcher = BatcherConfig {
            batch_rows: p.batch_rows,
            batch_bytes: p.batch_bytes,
            linger: Duration::from_millis(p.linger_ms),
            input: read_rx,
            out: batch_tx,
            handles: handles.clone(),
            ordered: Arc::new(ordered),
            shutdown: shutdown.clone(),
        };
        let poller = PollerConfig {
            lane,
            source,
            handles: handles.clone(),
            tables: ids,
            retry: self.settings.retry.clone(),
            out: read_tx,
            budget,
            shutdown,
            events: me.clone().recipient(),
        };
        let writer = SyncArbiter::start(1, once(writer, Writer::new));
        writer.do_send(WriteNext);
        let batcher = SyncArbiter::start(1, once(batcher, Batcher::new));
        batcher.do_send(NextBatch);
        let poller = SyncArbiter::start(1, once(poller, Poller::new));
        poller.do_send(Poll);
        Ok((poller, batcher, writer))
    }

    fn finish_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.lanes_left > 0 || self.recording > 0 {
            return;
        }
        for t in &self.tables {
            t.handle.finished();
        }
        if let Some(done) = self.done.take() {
            let tables = self
                .tables
                .iter()
                .map(|t| {
                    let m = t.handle.snapshot();
                    TableSummary {
                        name: t.handle.name.clone(),
                        rows_written: m.rows_written,
                        batches: m.batches,
                        dead_lettered: m.dead_lettered,
                        failed: m.failed,
                    }
                })
                .collect();
            let _ = done.send(RunOutcome { tables });
        }
        ctx.stop();
    }

    /// Records a table's failure in the state table, for `status` (unless another process
    /// owns it now).
    fn record(&mut self, table: usize, error: &Arc<Error>, ctx: &mut Context<Self>) {
        if matches!(**error, Error::Fenced { .. }) {
            return;
        }
        let t = &self.tables[table];
        let key = StateKey::new(&self.settings.pipeline_name, &t.handle.name);
        let (epoch, url, message) = (t.epoch, self.settings.target.url.clone(), error.to_string());
        let helpers = self.wiring.helpers.clone();
        self.recording += 1;
        let fut = async move {
            let mut helpers = helpers.lock().await;
            let conn = helpers.target(&url).await?;
            crate::state::record_error(conn, &key, epoch, &message).await
        };
        ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| {
            if let Err(e) = r {
                warn!(error = %e, "could not record the table's error in sluice.replication_state");
            }
            act.recording -= 1;
            act.finish_if_done(ctx);
        }));
    }
}

/// Binlog capture: every few seconds, how many bytes of binary log lie between each table's
/// committed position and the server's end (`sluice_binlog_bytes_behind`).
async fn watch_binlog_distance(
    mode: Mode,
    helpers: SharedHelpers,
    url: String,
    handles: Arc<[Arc<TableHandle>]>,
    shutdown: Shutdown,
) {
    loop {
        if shutdown.sleep(Duration::from_secs(5)).await {
            return;
        }
        let head = {
            let mut helpers = helpers.lock().await;
            match helpers.source(&url).await {
                Ok(conn) => mode.files(conn).await.ok().flatten(),
                Err(_) => None,
            }
        };
        let Some(head) = head else { continue };
        for h in handles.iter() {
            let read = h.position().as_ref().and_then(SourcePosition::read);
            if let Some(behind) = read.and_then(|p| p.bytes_behind(&head)) {
                h.set_bytes_behind(behind);
            }
        }
    }
}

impl Supervisor {
    /// Starts lane `lane`'s stages; a lane that cannot start fails its tables.
    fn launch(&mut self, lane: usize, handles: &Arc<[Arc<TableHandle>]>, me: &Addr<Supervisor>) {
        match self.start_lane(lane, handles, me) {
            Ok(addrs) => {
                self.lanes[lane]._stages = Some(addrs);
                self.lanes_left += 1;
            }
            Err(e) => {
                let e = Arc::new(e);
                let events = me.clone().recipient();
                for &id in &self.lanes[lane].ids {
                    super::table_failed(handles, &events, id, "supervisor", e.clone());
                }
            }
        }
    }

    /// Reloads a lane's tables' positions from the state table and starts it again.
    fn restart(&mut self, lane: usize, ctx: &mut Context<Self>) {
        let keys: Vec<(usize, StateKey, i64)> = self.lanes[lane]
            .ids
            .iter()
            .map(|&id| {
                let t = &self.tables[id];
                (
                    id,
                    StateKey::new(&self.settings.pipeline_name, &t.handle.name),
                    t.epoch,
                )
            })
            .collect();
        let settings = self.settings.clone();
        let shutdown = self.shutdown.clone();
        let helpers = self.wiring.helpers.clone();
        let load = async move {
            let load_once = || {
                let (keys, url) = (keys.clone(), settings.target.url.clone());
                let helpers = helpers.clone();
                async move {
                    let mut helpers = helpers.lock().await;
                    let conn = helpers.target(&url).await?;
                    let mut out = Vec::with_capacity(keys.len());
                    for (id, key, epoch) in keys {
                        let stored = crate::state::load(conn, &key).await?;
                        out.push((id, epoch, stored));
                    }
                    Ok::<_, Error>(out)
                }
            };
            // The target may be restarting: retried like everything else.
            crate::retry::retry(
                &mut crate::retry::Retrier::new(&settings.retry),
                &shutdown,
                load_once,
                |attempt, delay, e| warn!(lane, attempt, delay_ms = delay.as_millis() as u64, error = %e, "cannot read the stored positions yet; retrying"),
            )
            .await
        };
        self.recording += 1;
        ctx.spawn(load.into_actor(self).map(move |r, act, ctx| {
            act.recording -= 1;
            let me = ctx.address();
            let handles = act.handles();
            match r {
                Ok(states) if !act.shutdown.requested() => {
                    for (id, epoch, stored) in states {
                        match stored {
                            Some(s) if s.owner_epoch == epoch => {
                                act.tables[id].start = s.position;
                                act.tables[id].deferred_key = s.deferred_key;
                            }
                            _ => super::table_failed(
                                &handles,
                                &me.clone().recipient(),
                                id,
                                "supervisor",
                                Arc::new(Error::Fenced {
                                    table: act.tables[id].handle.name.clone(),
                                    message: "another sluice process took the table over while its lane restarted".into(),
                                }),
                            ),
                        }
                    }
                    info!(lane, "lane starting again from the stored positions");
                    act.lanes[lane].restarting = false;
                    act.lanes[lane].shutdown = act.lane_shutdown();
                    act.launch(lane, &handles, &me);
                }
                Ok(_) | Err(Error::Shutdown) => {}
                Err(e) => {
                    let e = Arc::new(e);
                    for &id in &act.lanes[lane].ids.clone() {
                        super::table_failed(&handles, &me.clone().recipient(), id, "supervisor", e.clone());
                    }
                }
            }
            act.finish_if_done(ctx);
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let handles = self.handles();
        let n = self.tables.len();
        let mode = Mode::of(&self.settings);
        let lanes = mode.lanes(&self.settings, n);
        self.budget = Some(Budget::new(self.settings.pipeline.memory_budget()));
        for t in &self.tables {
            let name = &t.handle.name;
            match &t.start {
                Some(_) => info!(table = %name, "replicating, resuming after the stored position"),
                None => info!(table = %name, "replicating from the beginning"),
            }
            if let Some(key) = &t.deferred_key {
                info!(table = %name, constraint = %key, "initial load: the target's primary key is deferred, and built once the source is caught up");
            }
        }
        if lanes > 1 {
            info!(
                tables = n,
                lanes, "tables spread over lanes (one reader and one writer connection each)"
            );
        }
        for lane in 0..lanes {
            let ids: Vec<usize> = (lane..n).step_by(lanes).collect();
            self.lanes.push(Lane {
                ids,
                shutdown: self.lane_shutdown(),
                restarting: false,
                _stages: None,
            });
            self.launch(lane, &handles, &me);
        }
        if mode.is_binlog() {
            actix::spawn(watch_binlog_distance(
                mode,
                self.wiring.helpers.clone(),
                self.settings.source.url.clone(),
                handles.clone(),
                self.shutdown.clone(),
            ));
        }
        if let Some(own) = self.ownership.take() {
            let events = me.clone().recipient();
            let handles = handles.clone();
            let lost = move |i: usize, e: Error| {
                super::table_failed(&handles, &events, i, "owner", Arc::new(e));
            };
            actix::spawn(own.watch(self.settings.clone(), self.shutdown.clone(), lost));
        }
        self.finish_if_done(ctx);
    }
}

impl Handler<Event> for Supervisor {
    type Result = ();

    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match ev {
            Event::TableFailed {
                table,
                stage,
                error,
            } => {
                let name = self.tables[table].handle.name.clone();
                error!(table = %name, stage, error = %error, "table stopped");
                self.record(table, &error, ctx);
                match self.settings.pipeline.on_table_error {
                    OnTableError::StopAll => {
                        if self.shutdown.request() {
                            info!(
                                "stopping every table ([pipeline] on_table_error = \"stop_all\")"
                            );
                        }
                    }
                    OnTableError::StopTable => {
                        if self.tables.iter().all(|t| t.handle.stopped()) {
                            self.shutdown.request();
                        }
                    }
                }
            }
            Event::LaneBroken { lane, error } => {
                if !self.lanes[lane].restarting {
                    warn!(lane, error = %error, "restarting the lane from the stored positions");
                    self.lanes[lane].restarting = true;
                    self.lanes[lane].shutdown.request();
                }
            }
            Event::LaneFinished { lane } => {
                self.lanes_left = self.lanes_left.saturating_sub(1);
                self.lanes[lane]._stages = None;
                if self.lanes[lane].restarting && !self.shutdown.requested() {
                    self.restart(lane, ctx);
                } else {
                    self.finish_if_done(ctx);
                }
            }
        }
    }
}
