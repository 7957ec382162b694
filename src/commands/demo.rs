//! `demo`: migrate, generate at a rate, replicate continuously, one line a second.

use std::future::Future;
use std::time::Duration;

use actix::Actor;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::sync::oneshot;

use super::{migrate, orm_connect, shutdown_on};
use crate::config::Settings;
use crate::conn::SharedHelpers;
use crate::error::{Error, Result, Side};
use crate::pipeline::generator::{Generator, StopGenerator};
use crate::pipeline::supervisor::Supervisor;
use crate::round;
use crate::shutdown::Shutdown;
use crate::sink::postgres;
use crate::source::mysql;
use crate::state::ownership::Ownership;

async fn count(db: &DatabaseConnection, sql: String) -> Result<i64> {
    let backend = db.get_database_backend();
    let side = if backend == sea_orm::DatabaseBackend::Postgres {
        Side::Target
    } else {
        Side::Source
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .map_err(|e| Error::orm(side, "counting rows", e))?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0))
}

/// `demo`: migrate, generate at `rate`, replicate continuously, and print one line a
/// second until `stop` resolves. Then the generator stops first and the replicator gets a
/// moment to copy the last orders, so the demo ends with both sides equal.
pub fn demo(settings: Settings, rate: f64, stop: impl Future<Output = ()> + 'static) -> Result<()> {
    actix::System::new().block_on(async move {
        let shutdown = Shutdown::new();
        let generator_stop = Shutdown::new();
        shutdown_on(
            stop,
            &generator_stop,
            "stopping the generator, then the replicator",
        );
        migrate(&settings, &shutdown).await?;
        let helpers = SharedHelpers::default();
        let http = crate::http::start(&settings, helpers.clone())?;
        let round::Planned {
            settings, plans, ..
        } = round::plan(settings, &shutdown).await?;
        let names: Vec<String> = settings.tables.iter().map(|t| t.name.clone()).collect();
        let ownership = Ownership::claim(&settings, &names, &shutdown).await?;
        let planned = round::prepare(&settings, plans, &ownership, &shutdown).await?;
        let source = orm_connect(&settings.source.url, Side::Source).await?;
        let target = orm_connect(&settings.target.url, Side::Target).await?;
        let (gen_tx, gen_rx) = oneshot::channel();
        let generator = Generator::new(source.clone(), rate, None, gen_tx).start();
        let (done_tx, done_rx) = oneshot::channel();
        // The background verify, as `run` makes it (`[verify] interval_s`).
        crate::verify::check::start(
            &settings,
            planned.iter().map(|p| p.handle.clone()),
            &shutdown,
        );
        Supervisor::new(
            settings.clone(),
            round::wiring(&settings, &helpers),
            false,
            planned,
            ownership,
            shutdown.clone(),
            done_tx,
        )
        .start();
        let src_sql = format!(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM {}",
            mysql::quote("orders")
        );
        let tgt_sql = format!(
            "SELECT COUNT(*) FROM {}",
            postgres::types::qualified(&settings.target.schema, "orders")
        );
        println!(
            "demo: generating {rate} orders/s into the source and replicating them; status page: http://{http}/; Ctrl-C stops"
        );
        let printer = actix::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (s, t) = (
                    count(&source, src_sql.clone()).await,
                    count(&target, tgt_sql.clone()).await,
                );
                // Commit time minus source time of the newest row committed.
                let lag = crate::telemetry::snapshot()
                    .get("orders")
                    .and_then(|m| Some((m.last_commit? - m.newest?).num_milliseconds()))
                    .map_or("-".to_string(), |l| format!("{} ms", l.max(0)));
                match (s, t) {
                    (Ok(s), Ok(t)) => println!("source rows {s:>9}  target rows {t:>9}  lag {lag}"),
                    (Err(e), _) | (_, Err(e)) => println!("counting failed: {e}"),
                }
            }
        });
        // Ctrl-C stops the generator first and gives the replicator a moment (many poll
        // intervals) to copy the last orders.
        let grace = Duration::from_millis(
            20 * settings.pipeline.poll_interval_ms + settings.source.safety_lag_ms + 500,
        );
        let s = shutdown.clone();
        let gen = generator.clone();
        actix::spawn(async move {
            generator_stop.requested_async().await;
            gen.do_send(StopGenerator);
            tokio::time::sleep(grace).await;
            s.request();
        });
        let outcome = done_rx.await.ok();
        printer.abort();
        // The replicator ended (Ctrl-C, or every table stopped): the generator's insert in
        // flight ends before the runtime does.
        generator.do_send(StopGenerator);
        let _ = tokio::time::timeout(Duration::from_secs(10), gen_rx).await;
        match outcome.as_ref().and_then(|o| o.failures().next()) {
            Some(t) => Err(Error::Other(format!(
                "table {:?}: {}",
                t.name,
                t.failed.as_ref().map(|e| e.to_string()).unwrap_or_default()
            ))),
            None => Ok(()),
        }
    })
}
