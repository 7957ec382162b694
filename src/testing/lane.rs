//! One lane's stages wired as the supervisor wires them (each a `SyncArbiter` actor, bounded
//! crossbeam channels between them), around any [`Source`] and [`Sink`], in an actix system
//! of its own thread: the test's thread stays free to wait on what the stages do.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, Recipient, SyncArbiter, SyncContext, System};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::pipeline::batcher::{Batcher, BatcherConfig, NextBatch};
use crate::pipeline::poller::{Poll, Poller, PollerConfig};
use crate::pipeline::writer::{WriteNext, Writer, WriterConfig};
use crate::pipeline::{BatchMsg, Budget, Event};
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::source::Source;
use crate::telemetry::TableHandle;

/// The batcher's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
}

impl Default for Limits {
    /// Large enough that only `Idle`, `Flush` and the end send a batch.
    fn default() -> Self {
        Limits {
            batch_rows: 1_000,
            batch_bytes: 1 << 30,
            linger: Duration::from_secs(3600),
        }
    }
}

/// Collects the events the stages send the supervisor.
struct Collector(Arc<Mutex<Vec<Event>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Event> for Collector {
    type Result = ();

    fn handle(&mut self, ev: Event, _: &mut Context<Self>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(ev);
    }
}

/// A running lane (or its writer alone). Dropping it stops its actix system.
pub struct Lane {
    pub shutdown: Shutdown,
    events: Arc<Mutex<Vec<Event>>>,
    system: System,
    thread: Option<JoinHandle<()>>,
    /// The stages' addresses: a `SyncArbiter` stops once none is left.
    _stages: Box<dyn Send>,
}

/// Starts a one-thread `SyncArbiter` whose one actor is built from `cfg`.
fn start<A, C>(cfg: C, make: fn(Option<C>) -> A) -> Addr<A>
where
    A: Actor<Context = SyncContext<A>>,
    C: Send + 'static,
{
    let slot = Mutex::new(Some(cfg));
    SyncArbiter::start(1, move || {
        make(slot.lock().unwrap_or_else(|p| p.into_inner()).take())
    })
}

/// Starts lane 0's writer and sets it going.
fn start_writer(
    sink: Box<dyn Sink>,
    input: Receiver<BatchMsg>,
    handles: Arc<[Arc<TableHandle>]>,
    shutdown: Shutdown,
    events: Recipient<Event>,
    side: Option<crate::pipeline::side::SideSink>,
) -> Addr<Writer> {
    let cfg = WriterConfig {
        lane: 0,
        sink,
        input,
        handles,
        retry: super::quick_retry(),
        shutdown,
        events,
        side,
    };
    let writer = start(cfg, Writer::new);
    writer.do_send(WriteNext);
    writer
}

impl Lane {
    /// Runs `wire` in a new actix system on its own thread; it gets the events' recipient
    /// and the lane's shutdown, starts the stages and returns what the test keeps.
    fn run<T: Send + 'static>(
        wire: impl FnOnce(Recipient<Event>, Shutdown) -> (Box<dyn Send>, T) + Send + 'static,
    ) -> (Lane, T) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let shutdown = Shutdown::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (ev, sd) = (events.clone(), shutdown.clone());
        let thread = std::thread::spawn(move || {
            let system = System::new();
            system.block_on(async move {
                let recipient = Collector(ev).start().recipient();
                let (stages, out) = wire(recipient, sd);
                let _ = tx.send((System::current(), stages, out));
            });
            let _ = system.run();
        });
        let (system, stages, out) = rx.recv().expect("the lane's system starts");
        let lane = Lane {
            shutdown,
            events,
            system,
            thread: Some(thread),
            _stages: stages,
        };
        (lane, out)
    }

    /// A writer alone over `sink`, fed by the returned sender (drop it to end the lane).
    pub fn writer(
        sink: Box<dyn Sink>,
        handles: Arc<[Arc<TableHandle>]>,
    ) -> (Lane, Sender<BatchMsg>) {
        Self::writer_beside(sink, None, handles)
    }

    /// [`Lane::writer`], with `side` the sink of its second connection (a copy's chunks).
    pub fn writer_beside(
        sink: Box<dyn Sink>,
        side: Option<Box<dyn Sink>>,
        handles: Arc<[Arc<TableHandle>]>,
    ) -> (Lane, Sender<BatchMsg>) {
        Lane::run(move |events, shutdown| {
            let (tx, rx) = bounded(64);
            let side = side.map(|s| Box::new(move || s) as crate::pipeline::side::SideSink);
            let writer = start_writer(sink, rx, handles, shutdown, events, side);
            (Box::new(writer) as Box<dyn Send>, tx)
        })
    }

    /// A whole lane: poller, batcher and writer between `source` and `sink`, serving every
    /// table of `handles`.
    pub fn full(
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
        handles: Arc<[Arc<TableHandle>]>,
        limits: Limits,
    ) -> Lane {
        Lane::run(move |events, shutdown| {
            let (read_tx, read_rx) = bounded(1);
            let (batch_tx, batch_rx) = bounded(4);
            let writer = start_writer(
                sink,
                batch_rx,
                handles.clone(),
                shutdown.clone(),
                events.clone(),
                None,
            );
            let batcher = start(
                BatcherConfig {
                    batch_rows: limits.batch_rows,
                    batch_bytes: limits.batch_bytes,
                    linger: limits.linger,
                    input: read_rx,
                    out: batch_tx,
                    handles: handles.clone(),
                    ordered: Default::default(),
                    shutdown: shutdown.clone(),
                },
                Batcher::new,
            );
            batcher.do_send(NextBatch);
            let poller = start(
                PollerConfig {
                    lane: 0,
                    source,
                    tables: (0..handles.len()).collect(),
                    handles,
                    retry: super::quick_retry(),
                    out: read_tx,
                    budget: Budget::new(1 << 30),
                    shutdown,
                    events,
                },
                Poller::new,
            );
            poller.do_send(Poll);
            (Box::new((poller, batcher, writer)) as Box<dyn Send>, ())
        })
        .0
    }

    pub fn events(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` for an event `pred` accepts; whether one came.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> bool {
        super::eventually(timeout, || self.events().iter().any(&pred))
    }

    /// Waits up to `timeout` for the lane's writer to finish.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        self.wait_event(timeout, |e| matches!(e, Event::LaneFinished { .. }))
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.shutdown.request();
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
