//! The commands: each builds what it needs from [`Settings`] and runs it to the end.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::config::{host_port, redact, Retry, Settings};
use crate::error::{Error, Result, Side};
use crate::pipeline::generator::{Generator, GeneratorReport, StopGenerator};
use crate::pipeline::supervisor::{
    GetStats, RunOutcome, Shutdown, Supervisor, TablePlan, TableStats,
};
use crate::pipeline::Backoff;
use crate::sink;
use crate::source::{mysql, schema::quote_mysql, schema::quote_pg};
use sea_orm::sqlx::{self, PgConnection};

/// Connects sea-orm to one side, with an error that names host:port and never the password.
async fn orm_connect(url: &str, side: Side) -> Result<DatabaseConnection> {
    let mut opts = sea_orm::ConnectOptions::new(url.to_string());
    opts.max_connections(4)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(opts).await.map_err(|e| {
        let mut err = Error::orm(
            side,
            format!("cannot connect to {} (URL {})", host_port(url), redact(url)),
            e,
        );
        if let Error::Database { message, .. } = &mut err {
            // sea-orm's messages can quote the URL; make sure no password leaks through.
            if let Some(pw) = url::Url::parse(url)
                .ok()
                .and_then(|u| u.password().map(str::to_string))
            {
                *message = message.replace(&pw, "***");
            }
        }
        err
    })
}

/// Runs `connect` until it succeeds, retrying transient failures (server down, refused,
/// restarting) with backoff until `retry.connect_timeout_ms` has passed.
async fn with_connect_retry<T, F, Fut>(retry: &Retry, mut connect: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let limit = Duration::from_millis(retry.connect_timeout_ms);
    let deadline = Instant::now() + limit;
    let mut backoff = Backoff::new(retry);
    loop {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                let (attempt, delay) = backoff.next_delay();
                let delay = delay.min(deadline.saturating_duration_since(Instant::now()));
                warn!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "cannot connect yet; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(Error::Database {
                side,
                context,
                mut message,
                transient,
            }) if transient => {
                message.push_str(&format!(
                    " (gave up after {:.1} s; retry.connect_timeout_ms sets how long to wait)",
                    limit.as_secs_f64()
                ));
                return Err(Error::Database {
                    side,
                    context,
                    message,
                    transient,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates (or brings up to date) the `sluice` schema's tables on the target.
async fn apply_state_schema(target: &DatabaseConnection) -> Result<()> {
    migration::run_on_target(target, &migration::State)
        .await
        .map_err(|e| Error::orm(Side::Target, "creating the sluice state tables", e))
}

/// `migrate`: the demo table on both sides and the state table on the target.
pub async fn migrate(settings: &Settings) -> Result<()> {
    use migration::MigratorTraitSelf;
    let r = &settings.retry;
    let source = with_connect_retry(r, || orm_connect(&settings.source_url, Side::Source)).await?;
    migration::SourceDemo
        .up(&source, None)
        .await
        .map_err(|e| Error::orm(Side::Source, "creating the demo orders table", e))?;
    let target = with_connect_retry(r, || orm_connect(&settings.target_url, Side::Target)).await?;
    apply_state_schema(&target).await?;
    migration::run_on_target(
        &target,
        &migration::TargetDemo {
            schema: settings.target_schema.clone(),
        },
    )
    .await
    .map_err(|e| Error::orm(Side::Target, "creating the demo orders table", e))?;
    info!(
        source = %redact(&settings.source_url),
        target = %redact(&settings.target_url),
        "migrated: orders on the source, {}.orders and sluice.replication_state on the target",
        settings.target_schema
    );
    Ok(())
}

/// Checks every configured table and loads its watermark: everything `run` must know
/// before it starts a pipeline. Bad definitions fail here, before anything is written.
pub async fn prepare(settings: &Settings) -> Result<Vec<TablePlan>> {
    let r = &settings.retry;
    let target = with_connect_retry(r, || orm_connect(&settings.target_url, Side::Target)).await?;
    apply_state_schema(&target).await?;
    target.close().await.ok();
    let mut src = with_connect_retry(r, || mysql::connect(&settings.source_url)).await?;
    let mut tgt = with_connect_retry(r, || sink::connect(&settings.target_url)).await?;
    let mut plans = Vec::with_capacity(settings.tables.len());
    for t in &settings.tables {
        let pk = t.primary_key.as_ref().map(|p| p.to_vec());
        let opts = crate::source::schema::MapOptions {
            tinyint1_as_boolean: t.tinyint1_as_boolean,
        };
        let schema = mysql::introspect(
            &mut src,
            &t.name,
            &t.cursor.to_vec(),
            pk.as_deref(),
            opts,
            settings.zero_dates,
        )
        .await?;
        let mut deferred_key = sink::deferred_key(&mut tgt, &schema.name).await?;
        sink::ensure_table(
            &mut tgt,
            &settings.target_schema,
            &schema,
            deferred_key.is_some(),
        )
        .await?;
        let start = sink::load_position(&mut tgt, &schema).await?;
        if start.is_none() && deferred_key.is_none() && settings.pipeline.defer_key {
            let rows = mysql::estimate_rows(&mut src, &schema.name).await?;
            deferred_key = sink::defer_key(
                &mut tgt,
                &settings.target_schema,
                &schema,
                rows,
                settings.pipeline.defer_key_min_rows,
            )
            .await?;
        }
        plans.push(TablePlan {
            schema: Arc::new(schema),
            start,
            deferred_key,
        });
    }
    Ok(plans)
}

/// Takes, for each configured table, a PostgreSQL session advisory lock on the target,
/// held on the returned connection for the whole run: one sluice process replicates a table
/// into a target at a time. With `standby`, a process that finds a table owned waits (as a
/// hot standby) until the owner stops or dies, then takes over; without it, it is refused.
/// Watermarks are loaded only after this, so a standby resumes where the owner stopped.
async fn claim_tables(settings: &Settings, standby: bool) -> Result<PgConnection> {
    let mut conn =
        with_connect_retry(&settings.retry, || sink::connect(&settings.target_url)).await?;
    for t in &settings.tables {
        let name = &t.name;
        let mut waited = false;
        loop {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext('sluice:' || $2))")
                    .bind(ADVISORY_LOCK_SPACE)
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| Error::db(Side::Target, "taking the table's advisory lock", &e))?;
            if got {
                if waited {
                    info!(table = %name, "the owner has gone: taking over");
                }
                break;
            }
            if !standby {
                return Err(Error::Other(format!(
                    "table {name:?} is already being replicated into this target by another sluice process \
                     (it holds advisory lock ({ADVISORY_LOCK_SPACE}, hashtext('sluice:{name}'))); stop that process first, \
                     or start this one with `run` to stand by until it stops"
                )));
            }
            if !waited {
                info!(table = %name, "another sluice process owns this table; standing by until it stops");
                waited = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(conn)
}

/// First key of sluice's two-key advisory locks ("sl" in ASCII).
const ADVISORY_LOCK_SPACE: i32 = 0x736c;

/// Waits for `done`, calling `on_signal` at the first SIGINT/SIGTERM. A second signal
/// exits at once (nothing is lost: uncommitted rows are read again on the next start).
async fn until_done<T>(mut done: oneshot::Receiver<T>, on_signal: impl Fn()) -> Option<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    let mut signalled = false;
    loop {
        tokio::select! {
            r = &mut done => return r.ok(),
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if signalled {
            eprintln!("second signal: exiting now; uncommitted rows will be read again on restart");
            std::process::exit(130);
        }
        signalled = true;
        on_signal();
    }
}

/// `run`: replicate every configured table until stopped (or, with `once`, until caught
/// up with the source as it was at start).
pub fn run(settings: Settings, once: bool) -> Result<RunOutcome> {
    actix::System::new().block_on(async move {
        let started = Instant::now();
        crate::http::start(&settings)?;
        let _claim = claim_tables(&settings, !once).await?;
        let plans = prepare(&settings).await?;
        plans
            .iter()
            .for_each(|p| crate::telemetry::register(&p.schema.name));
        let names = plans.iter().map(|p| p.schema.name.clone()).collect();
        let progress = crate::progress::start(&settings, names);
        let (done_tx, done_rx) = oneshot::channel();
        let sup = Supervisor::new(settings, once, plans, done_tx).start();
        let outcome = until_done(done_rx, || sup.do_send(Shutdown))
            .await
            .ok_or_else(|| Error::Other("the supervisor stopped without a report".into()))?;
        progress.finish();
        log_summary(&outcome.tables, started.elapsed());
        Ok(outcome)
    })
}

fn log_summary(tables: &BTreeMap<String, TableStats>, elapsed: Duration) {
    let total: u64 = tables.values().map(|s| s.rows_written).sum();
    let secs = elapsed.as_secs_f64();
    info!(
        rows = total,
        seconds = format!("{secs:.2}"),
        rows_per_second = (total as f64 / secs.max(1e-9)) as u64,
        "replication stopped"
    );
}

/// `generate`: insert demo orders at `rate` rows/s until `total` or Ctrl-C.
pub fn generate(settings: &Settings, rate: f64, total: Option<u64>) -> Result<GeneratorReport> {
    let url = settings.source_url.clone();
    actix::System::new().block_on(async move {
        let db = orm_connect(&url, Side::Source).await?;
        let (tx, rx) = oneshot::channel();
        let generator = Generator::new(db, rate, total, tx).start();
        let mut report = until_done(rx, || generator.do_send(StopGenerator))
            .await
            .ok_or_else(|| Error::Other("the generator stopped without a report".into()))?;
        match report.error.take() {
            Some(e) => Err(e),
            None => Ok(report),
        }
    })
}

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
/// second until Ctrl-C.
pub fn demo(settings: Settings, rate: f64) -> Result<()> {
    actix::System::new().block_on(async move {
        migrate(&settings).await?;
        crate::http::start(&settings)?;
        let _claim = claim_tables(&settings, false).await?;
        let plans = prepare(&settings).await?;
        plans
            .iter()
            .for_each(|p| crate::telemetry::register(&p.schema.name));
        let source = orm_connect(&settings.source_url, Side::Source).await?;
        let target = orm_connect(&settings.target_url, Side::Target).await?;
        let (gen_tx, _gen_rx) = oneshot::channel();
        let generator = Generator::new(source.clone(), rate, None, gen_tx).start();
        let (done_tx, done_rx) = oneshot::channel();
        let sup = Supervisor::new(settings.clone(), false, plans, done_tx).start();
        let sup2 = sup.clone();
        let src_sql = format!(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM {}",
            quote_mysql("orders")
        );
        let tgt_sql = format!(
            "SELECT COUNT(*) FROM {}.{}",
            quote_pg(&settings.target_schema),
            quote_pg("orders")
        );
        println!(
            "demo: generating {rate} orders/s into the source and replicating them; Ctrl-C stops"
        );
        let printer = actix::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (s, t) = (
                    count(&source, src_sql.clone()).await,
                    count(&target, tgt_sql.clone()).await,
                );
                let stats = sup2.send(GetStats).await.unwrap_or_default();
                let lag = stats
                    .get("orders")
                    .and_then(|s| s.last_lag)
                    .map_or("-".to_string(), |l| format!("{} ms", l.as_millis()));
                match (s, t) {
                    (Ok(s), Ok(t)) => println!("source rows {s:>9}  target rows {t:>9}  lag {lag}"),
                    (Err(e), _) | (_, Err(e)) => println!("counting failed: {e}"),
                }
            }
        });
        // Ctrl-C stops the generator first and gives the replicator a moment (many poll
        // intervals) to copy the last orders, so the demo ends with both sides equal.
        let grace = Duration::from_millis(
            20 * settings.pipeline.poll_interval_ms + settings.safety_lag_ms + 500,
        );
        let outcome = until_done(done_rx, || {
            generator.do_send(StopGenerator);
            let sup = sup.clone();
            actix::spawn(async move {
                tokio::time::sleep(grace).await;
                sup.do_send(Shutdown);
            });
        })
        .await;
        printer.abort();
        match outcome.and_then(|o| o.failure) {
            Some((msg, code)) if code == 2 => Err(Error::Schema(msg)),
            Some((msg, _)) => Err(Error::Other(msg)),
            None => Ok(()),
        }
    })
}
