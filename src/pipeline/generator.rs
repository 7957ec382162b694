//! The generator: emulates production by inserting demo orders into the source at a set
//! rate, with parameterized multi-row inserts built from the sea-orm entity.

use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture,
};
use entities::orders;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::{Error, Side};

/// Rows per INSERT statement at most.
const MAX_ROWS_PER_INSERT: u64 = 1_000;

/// How a generator run ended.
#[derive(Debug)]
pub struct GeneratorReport {
    pub inserted: u64,
    pub elapsed: Duration,
    pub error: Option<Error>,
}

pub struct Generator {
    db: DatabaseConnection,
    rate: f64,
    total: Option<u64>,
    inserted: u64,
    /// An insert is under way; ticks until it returns do nothing.
    busy: bool,
    /// Asked to stop while an insert was in flight: stops when it ends.
    stopping: bool,
    started: Instant,
    done: Option<oneshot::Sender<GeneratorReport>>,
}

impl Generator {
    /// `rate` rows per second, until `total` rows (or forever).
    pub fn new(
        db: DatabaseConnection,
        rate: f64,
        total: Option<u64>,
        done: oneshot::Sender<GeneratorReport>,
    ) -> Self {
        Generator {
            db,
            rate,
            total,
            inserted: 0,
            busy: false,
            stopping: false,
            started: Instant::now(),
            done: Some(done),
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>, error: Option<Error>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(GeneratorReport {
                inserted: self.inserted,
                elapsed: self.started.elapsed(),
                error,
            });
        }
        ctx.stop();
    }

    /// Rows owed by now at the configured rate, capped by the total.
    fn due(&self) -> u64 {
        let due = (self.started.elapsed().as_secs_f64() * self.rate) as u64;
        self.total.map_or(due, |t| due.min(t))
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.stopping {
            return;
        }
        if self.total.is_some_and(|t| self.inserted >= t) {
            return self.finish(ctx, None);
        }
        let n = self
            .due()
            .saturating_sub(self.inserted)
            .min(MAX_ROWS_PER_INSERT);
        if n == 0 {
            return;
        }
        // `created` is the server's NOW(6), as a production insert would set it: a time
        // taken on the server as the statement starts, which is what the poller's read
        // horizon (oldest open transaction, minus a small safety lag) is measured against.
        let mut insert = Query::insert();
        insert
            .into_table(orders::Entity)
            .columns([orders::Column::OrderId, orders::Column::Created]);
        for _ in 0..n {
            insert.values_panic([
                uuid::Uuid::new_v4().to_string().into(),
                Expr::cust("NOW(6)"),
            ]);
        }
        let db = self.db.clone();
        self.busy = true;
        ctx.spawn(
            async move { db.execute(&insert).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.busy = false;
                    match res {
                    Ok(_) => {
                        act.inserted += n;
                        debug!(rows = n, total = act.inserted, "generated orders");
                    }
                    Err(e) => {
                        let err = Error::orm(Side::Source, "inserting demo orders", e);
                        if err.is_retryable() {
                            warn!(error = %err, "generator insert failed; retrying on the next tick");
                        } else {
                            act.finish(ctx, Some(err));
                        }
                    }
                }
                    if act.stopping {
                        // Asked to stop while this insert ran: it has ended now.
                        act.finish(ctx, None);
                    }
                }),
        );
    }
}

impl Actor for Generator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Tick often enough that inserts stay small and smooth (1 ms at 1,000 rows/s
        // would be wasteful; 5-100 ms is a good spread).
        let period = Duration::from_secs_f64((1.0 / self.rate).clamp(0.005, 0.1));
        ctx.run_interval(period, |act, ctx| act.tick(ctx));
        self.tick(ctx);
    }
}

/// Stop generating (Ctrl-C).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopGenerator;

impl Handler<StopGenerator> for Generator {
    type Result = ();
    fn handle(&mut self, _: StopGenerator, ctx: &mut Context<Self>) {
        // An insert in flight ends first: dropped half-way, its pooled connection would be
        // released outside the runtime once the process ends.
        if self.busy {
            self.stopping = true;
        } else {
            self.finish(ctx, None);
        }
    }
}
