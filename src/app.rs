//! The commands: each builds what it needs from [`Settings`] and runs it to the end. Each
//! takes its shutdown as a future (the binary passes its signal handler; tests may pass
//! anything): the library never installs signal handlers nor exits the process.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::config::{host_port, Settings};
use crate::error::{Error, Result, Side};
use crate::pipeline::generator::{Generator, GeneratorReport, StopGenerator};
use crate::pipeline::supervisor::{PlannedTable, RunOutcome, Supervisor};
use crate::redact::redact;
use crate::retry::{retry, Retrier};
use crate::shutdown::Shutdown;
use crate::sink::postgres::{self, ddl, initial_load, reshape};
use crate::source::{mysql, TablePlan};
use crate::state::ownership::Ownership;
use crate::state::{self, StateKey};

/// Connects sea-orm to one side (one connection), with an error that names host:port and
/// never the password.
async fn orm_connect(url: &str, side: Side) -> Result<DatabaseConnection> {
    let mut opts = sea_orm::ConnectOptions::new(url.to_string());
    opts.max_connections(1)
        .min_connections(0)
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
/// restarting) until `retry.connect_timeout_ms` has passed, or shutdown.
async fn connect_retrying<T, F, Fut>(
    settings: &Settings,
    shutdown: &Shutdown,
    connect: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut policy = Retrier::for_connect(&settings.retry);
    retry(&mut policy, shutdown, connect, |attempt, delay, e| {
        warn!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "cannot connect yet; retrying")
    })
    .await
}

/// Creates (or brings up to date) the `sluice` schema's tables on the target.
async fn apply_state_schema(settings: &Settings, shutdown: &Shutdown) -> Result<()> {
    let target = connect_retrying(settings, shutdown, || {
        orm_connect(&settings.target_url, Side::Target)
    })
    .await?;
    let r = migration::run_on_target(&target, &migration::State)
        .await
        .map_err(|e| Error::orm(Side::Target, "creating the sluice state tables", e));
    target.close().await.ok();
    r
}

/// `migrate`: the demo table on both sides and the state table on the target.
pub async fn migrate(settings: &Settings, shutdown: &Shutdown) -> Result<()> {
    let source = connect_retrying(settings, shutdown, || {
        orm_connect(&settings.source_url, Side::Source)
    })
    .await?;
    migration::create_source_demo(&source)
        .await
        .map_err(|e| Error::orm(Side::Source, "creating the demo orders table", e))?;
    source.close().await.ok();
    apply_state_schema(settings, shutdown).await?;
    let target = connect_retrying(settings, shutdown, || {
        orm_connect(&settings.target_url, Side::Target)
    })
    .await?;
    migration::run_on_target(
        &target,
        &migration::TargetDemo {
            schema: settings.target_schema.clone(),
        },
    )
    .await
    .map_err(|e| Error::orm(Side::Target, "creating the demo orders table", e))?;
    target.close().await.ok();
    info!(
        source = %redact(&settings.source_url),
        target = %redact(&settings.target_url),
        "migrated: orders on the source, {}.orders and sluice.replication_state on the target",
        settings.target_schema
    );
    Ok(())
}

/// What [`plan`] found.
pub struct Planned {
    /// The settings with one `[[tables]]` entry per table to replicate.
    pub settings: Settings,
    pub plans: Vec<TablePlan>,
    /// Every table a pattern took, replicated or left out.
    pub taken: Vec<String>,
}

/// Introspects every configured table on the source for the configured capture mode:
/// bad definitions fail here, before anything is written anywhere.
///
/// `[[tables]]` patterns are expanded here against the source's tables: the settings come
/// back with one entry per table to replicate, and a table a pattern took that cannot be
/// replicated (no primary key, a type without a mapping) is left out with a warning naming
/// why, where a table named on its own fails the start.
pub async fn plan(settings: Settings, shutdown: &Shutdown) -> Result<Planned> {
    let mut src =
        connect_retrying(&settings, shutdown, || mysql::connect(&settings.source_url)).await?;
    let (tables, existing) = mysql::expand_on_source(&mut src, &settings.tables).await?;
    for t in settings.tables.iter().filter(|t| t.is_pattern()) {
        if !existing.iter().any(|e| t.takes(e)) {
            warn!(pattern = %t.name, "no source table matches this [[tables]] pattern yet");
        }
    }
    let taken: Vec<String> = tables
        .iter()
        .filter(|t| t.from_pattern)
        .map(|t| t.name.clone())
        .collect();
    let mut settings = Settings { tables, ..settings };
    if settings.capture == crate::config::Capture::Binlog {
        crate::source::binlog::checks::check_server(&mut src).await?;
    } else {
        // A zone for DATETIME cursors the server cannot convert to stops here (exit 2).
        mysql::resolve_zone(&mut src, settings.datetime_zone.as_deref()).await?;
    }
    // Every table is checked, and every definition problem reported at once, each with its
    // fix: one round trip for a schema with several.
    let mut plans = Vec::with_capacity(settings.tables.len());
    let mut kept = Vec::with_capacity(settings.tables.len());
    let mut problems = Vec::new();
    for t in &settings.tables {
        let planned = match crate::source::plan_table(&mut src, &settings, t).await {
            Ok(plan) => ddl::check_names(plan.model()).map(|()| plan),
            Err(e) => Err(e),
        };
        match planned {
            Ok(plan) => {
                plans.push(plan);
                kept.push(t.clone());
            }
            Err(e @ (Error::Schema(_) | Error::Config(_))) if t.from_pattern => {
                warn!(table = %t.name, reason = %e, "a table a [[tables]] pattern takes cannot be replicated; left out");
            }
            Err(e @ (Error::Schema(_) | Error::Config(_))) => problems.push(e),
            Err(e) => return Err(e),
        }
    }
    let listed = settings.tables.len();
    settings.tables = kept;
    if problems.is_empty() && settings.tables.is_empty() {
        return Err(Error::Config(
            "no table to replicate: the [[tables]] patterns take no source table that can be replicated (see the warnings above)".into(),
        ));
    }
    match problems.len() {
        0 => Ok(Planned {
            settings,
            plans,
            taken,
        }),
        1 => Err(problems.remove(0)),
        n => Err(Error::Schema(format!(
            "{n} of the {listed} tables cannot be replicated as configured:\n  - {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  - ")
        ))),
    }
}

/// Loads each planned table's state and readies its target table: everything `run` must
/// know before it starts the pipeline. Called once the tables are owned, so a standby
/// resumes where the owner stopped.
pub async fn prepare(
    settings: &Settings,
    plans: Vec<TablePlan>,
    ownership: &Ownership,
    shutdown: &Shutdown,
) -> Result<Vec<PlannedTable>> {
    let mut tgt = connect_retrying(settings, shutdown, || {
        postgres::connect(&settings.target_url, "setup")
    })
    .await?;
    let mut planned = Vec::with_capacity(plans.len());
    for (i, mut plan) in plans.into_iter().enumerate() {
        let name = plan.model().name.clone();
        let key = StateKey::new(&settings.pipeline_name, &name);
        let epoch = ownership.epoch(i);
        let (start, mut deferred_key) = match state::load(&mut tgt, &key).await? {
            Some(s) => (s.position, s.deferred_key),
            None => (None, None),
        };
        let recorded = state::latest_shape(&mut tgt, &key).await?;
        let on_drop = settings
            .tables
            .get(i)
            .and_then(|t| t.on_drop_column)
            .unwrap_or(settings.pipeline.on_drop_column);
        // The shape the target is brought to now. Polling reads the table as it is, so the
        // target follows any change made while sluice was stopped at once; the binlog is
        // read from the stored position, where the table had the recorded shape, and the
        // changes since arrive in order with the stream.
        let mut follow_later = false;
        if let (TablePlan::Binlog(b), Some(rec), Some(_)) = (&mut plan, &recorded, &start) {
            if !rec.same_shape(&b.spec.model) {
                follow_later = true;
                info!(table = %name, version = rec.version, "the table changed on the source since its stored position; the binlog stream starts in the shape recorded there and follows the changes in order");
                b.start_in(rec, settings.zero_dates)?;
            }
        }
        let version = match &recorded {
            Some(rec) if rec.same_shape(plan.model()) && rec.indexes == plan.model().indexes => {
                rec.version
            }
            Some(rec) => rec.version + 1,
            None => 1,
        };
        plan.set_version(version);
        let model = plan.model().clone();
        sqlx::raw_sql("BEGIN")
            .execute(&mut tgt)
            .await
            .map_err(|e| Error::db(Side::Target, "BEGIN", &e))?;
        let ran = ddl::ensure_table(
            &mut tgt,
            &settings.target_schema,
            &model,
            deferred_key.is_some(),
            ddl::Follow {
                old: recorded.as_ref(),
                on_drop,
                wait: settings.lock_wait(),
                later: follow_later,
            },
        )
        .await?;
        // A table already replicated gets the source's indexes now (one whose load is still
        // to come gets them once it is loaded; one whose stream starts in an older shape, as
        // the stream reaches the source's present).
        let mut ran = ran;
        if settings.pipeline.indexes
            && start.is_some()
            && !plan.will_load(start.as_ref())
            && deferred_key.is_none()
            && !follow_later
        {
            ran.extend(
                reshape::sync_indexes(
                    &mut tgt,
                    &settings.target_schema,
                    &model,
                    settings.capture == crate::config::Capture::Binlog,
                    settings.lock_wait(),
                )
                .await?,
            );
        }
        if recorded.as_ref().is_none_or(|r| r.version != version) {
            state::record_shape(&mut tgt, &key, &model, start.as_ref(), &ran).await?;
        }
        sqlx::raw_sql("COMMIT")
            .execute(&mut tgt)
            .await
            .map_err(|e| Error::db(Side::Target, "COMMIT", &e))?;
        if let Some(p) = &start {
            plan.check_position(p).map_err(|e| match e {
                Error::Schema(m) => Error::Schema(format!(
                    "{m}. The table's row: DELETE FROM sluice.replication_state WHERE pipeline = {} AND table_name = {}",
                    sql_literal(&key.pipeline),
                    sql_literal(&key.table)
                )),
                e => e,
            })?;
        }
        if start.is_none()
            && deferred_key.is_none()
            && settings.pipeline.defer_key
            && plan.estimated_rows() >= settings.pipeline.defer_key_min_rows
        {
            deferred_key = initial_load::defer_key(
                &mut tgt,
                &key,
                epoch,
                &settings.target_schema,
                &model,
                plan.estimated_rows(),
                settings.lock_wait(),
            )
            .await?;
        }
        planned.push(PlannedTable {
            plan: Arc::new(plan),
            start,
            deferred_key,
            epoch,
            handle: crate::telemetry::register(&model.name),
        });
    }
    Ok(planned)
}

/// Requests `shutdown` when `stop` resolves (on the current actix System).
fn shutdown_on(stop: impl Future<Output = ()> + 'static, shutdown: &Shutdown, what: &'static str) {
    let s = shutdown.clone();
    actix::spawn(async move {
        stop.await;
        if s.request() {
            info!("{what}");
        }
    });
}

/// `run`: replicate every configured table until `stop` resolves (or, with `once`, until
/// caught up with the source as it was at start).
pub fn run(
    settings: Settings,
    once: bool,
    stop: impl Future<Output = ()> + 'static,
) -> Result<RunOutcome> {
    actix::System::new().block_on(async move {
        let started = Instant::now();
        let shutdown = Shutdown::new();
        shutdown_on(stop, &shutdown, "stopping: finishing the batches in flight");
        crate::http::start(&settings)?;
        // With patterns, a table created on the source that one takes is picked up: the
        // round in progress ends as a shutdown would (batches in flight committed), and the
        // next starts with it, every table resuming from its committed position.
        let discover = !once && settings.tables.iter().any(|t| t.is_pattern());
        let mut state_schema = false;
        // This process as a member of the pipeline's group (`run` only).
        let group = Arc::new(crate::state::members::Group::new(
            &settings.target_url,
            &settings.pipeline_name,
            settings.cluster.member_timeout_ms,
        ));
        let mut standing_by = false;
        loop {
            let round = Shutdown::new();
            {
                let (all, round) = (shutdown.clone(), round.clone());
                actix::spawn(async move {
                    all.requested_async().await;
                    round.request();
                });
            }
            let Planned {
                settings: expanded,
                plans,
                taken,
            } = plan(settings.clone(), &shutdown).await?;
            if !state_schema {
                apply_state_schema(&expanded, &shutdown).await?;
                state_schema = true;
                if !once {
                    actix::spawn(group.clone().heartbeat(shutdown.clone()));
                }
            }
            let names: Vec<String> = expanded.tables.iter().map(|t| t.name.clone()).collect();
            let all_names = names.clone();
            let kept: Vec<String> = expanded
                .tables
                .iter()
                .filter(|t| t.from_pattern)
                .map(|t| t.name.clone())
                .collect();
            // `run --once` takes every table or none; `run` takes its share of them beside
            // the pipeline's other members (state::members).
            let (expanded, plans, names, ownership) = if once {
                let ownership = Ownership::claim(&expanded, &names, &shutdown).await?;
                (expanded, plans, names, ownership)
            } else {
                // Without a view of the group (the target just came back), this member
                // reaches for every free table; the next look rebalances.
                let me = crate::state::ownership::owner_id();
                let (live, share, order) = group_view(&group, &names)
                    .await
                    .unwrap_or_else(|| (vec![me], names.len(), (0..names.len()).collect()));
                let (ownership, taken) =
                    Ownership::claim_some(&expanded, &names, &order, share, &shutdown).await?;
                if taken.len() < names.len() {
                    info!(members = live.len(), share, held = taken.len(), tables = names.len(), "sharing the pipeline's tables with its other members");
                }
                let mut plans: Vec<Option<_>> = plans.into_iter().map(Some).collect();
                let plans: Vec<_> = taken.iter().filter_map(|&i| plans[i].take()).collect();
                let tables: Vec<_> = taken.iter().map(|&i| expanded.tables[i].clone()).collect();
                let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
                let expanded = Settings {
                    tables,
                    ..expanded
                };
                (expanded, plans, names, ownership)
            };
            group.held.set(names.clone());
            crate::telemetry::set_standby(names.is_empty());
            crate::telemetry::keep_only(&names);
            if !once {
                actix::spawn(watch_group(
                    group.clone(),
                    all_names.clone(),
                    names.len(),
                    round.clone(),
                ));
            }
            if names.is_empty() {
                if !standing_by {
                    info!("standing by: the pipeline's other members hold every table; this one takes tables over when a member stops");
                    standing_by = true;
                }
                drop(ownership);
                round.requested_async().await;
                if shutdown.requested() {
                    return Ok(RunOutcome::default());
                }
                continue;
            }
            standing_by = false;
            let planned = prepare(&expanded, plans, &ownership, &shutdown).await?;
            info!(pipeline = %expanded.pipeline_name, tables = planned.len(), "replicating");
            let progress = crate::progress::start(&expanded, names);
            let (done_tx, done_rx) = oneshot::channel();
            let found = Arc::new(std::sync::Mutex::new(Vec::new()));
            if discover {
                actix::spawn(discover_tables(
                    settings.clone(),
                    taken,
                    kept,
                    round.clone(),
                    found.clone(),
                ));
            }
            if !once && expanded.verify.interval_s > 0 {
                let checked = expanded
                    .tables
                    .iter()
                    .zip(&planned)
                    .map(|(t, p)| crate::verify::check::Checked {
                        settings: t.clone(),
                        handle: p.handle.clone(),
                    })
                    .collect();
                actix::spawn(crate::verify::check::run(
                    expanded.clone(),
                    checked,
                    round.clone(),
                ));
            }
            Supervisor::new(expanded, once, planned, ownership, round, done_tx).start();
            let outcome = done_rx
                .await
                .map_err(|_| Error::Other("the supervisor stopped without a report".into()))?;
            progress.finish();
            let found = std::mem::take(&mut *found.lock().unwrap_or_else(|p| p.into_inner()));
            // With patterns the run goes on while tables come and go: a round that ended
            // without a failure or a shutdown (new tables, or the pattern's tables gone) is
            // followed by the next.
            // In a group, a table fenced off is one another member took over (after this
            // process lost its session, say): not a failure of this member.
            let handed_over = |t: &crate::pipeline::supervisor::TableSummary| {
                matches!(t.failed.as_deref(), Some(Error::Fenced { .. }))
            };
            if !once && !discover && !shutdown.requested() && outcome.failures().all(handed_over)
            {
                // The group changed: this member takes its new share.
                continue;
            }
            if discover && !shutdown.requested() && outcome.failures().all(handed_over) {
                if found.is_empty() {
                    info!("the tables a [[tables]] pattern took are gone or done; looking at the source's tables again");
                } else {
                    info!(tables = %found.join(", "), "the tables a [[tables]] pattern takes changed on the source; replicating them as they are now, every table resuming from its committed position");
                }
                if shutdown.sleep(Duration::from_secs(1)).await {
                    return Ok(outcome);
                }
                continue;
            }
            let secs = started.elapsed().as_secs_f64();
            let total = outcome.rows_written();
            info!(
                rows = total,
                seconds = format!("{secs:.2}"),
                rows_per_second = (total as f64 / secs.max(1e-9)) as u64,
                "replication stopped"
            );
            return Ok(outcome);
        }
    })
}

/// How often a member looks at the group: who is live, and which tables are free.
const GROUP_EVERY: Duration = Duration::from_secs(1);

/// This process's view of the pipeline's group: the live members (itself included), its
/// share of `tables`, and the order in which it reaches for them. `None` when the target
/// cannot say now.
async fn group_view(
    group: &crate::state::members::Group,
    tables: &[String],
) -> Option<(Vec<String>, usize, Vec<usize>)> {
    let me = crate::state::ownership::owner_id();
    let mut live: Vec<String> = group
        .members()
        .await
        .ok()?
        .into_iter()
        .filter(|m| m.live)
        .map(|m| m.member)
        .collect();
    if !live.contains(&me) {
        live.push(me.clone());
    }
    let share = crate::state::members::share(tables.len(), live.len());
    let order = crate::state::members::preference(&me, &live, tables);
    Some((live, share, order))
}

/// Ends `round` when this member should hold another number of tables than `held`: more
/// than its share (members joined: it lets the excess go), or fewer while some table is free
/// (a member left or died: it takes its share).
async fn watch_group(
    group: Arc<crate::state::members::Group>,
    tables: Vec<String>,
    held: usize,
    round: Shutdown,
) {
    let mut wanting = 0;
    loop {
        if round.sleep(GROUP_EVERY).await {
            return;
        }
        let Some((live, share, _)) = group_view(&group, &tables).await else {
            wanting = 0;
            continue;
        };
        if held > share {
            info!(
                members = live.len(),
                share,
                held,
                "more members share the pipeline: letting the tables beyond this member's share go"
            );
            round.request();
            return;
        }
        if held < share {
            let free = group.free(&tables).await.unwrap_or_default();
            // Tables a gone member held are taken at once; others after three looks in a
            // row: right after a PostgreSQL restart, the other members' locks and heartbeats
            // take a moment to come back.
            wanting = if free.is_empty() {
                0
            } else if group.orphaned(&free, &live).await.unwrap_or(false) {
                3
            } else {
                wanting + 1
            };
            if wanting >= 3 {
                info!(members = live.len(), share, held, free = %free.join(", "), "tables are free: taking this member's share");
                round.request();
                return;
            }
        } else {
            wanting = 0;
        }
    }
}

/// How often the source's table list is looked at for new tables a pattern takes.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// Looks at the source's tables every [`DISCOVER_EVERY`] until `round` ends; when a pattern
/// takes a table not among `taken`, or a table a pattern took (`kept`) is gone, records it in
/// `found` and ends the round.
async fn discover_tables(
    settings: Settings,
    taken: Vec<String>,
    kept: Vec<String>,
    round: Shutdown,
    found: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut conn = None;
    let mut warned = false;
    while !round.sleep(DISCOVER_EVERY).await {
        if conn.is_none() {
            conn = mysql::connect(&settings.source_url).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let existing = match mysql::base_tables(c).await {
            Ok(e) => e,
            Err(e) => {
                if !warned {
                    warn!(error = %e, "cannot list the source's tables to find new ones; retrying");
                    warned = true;
                }
                conn = None;
                continue;
            }
        };
        let mut new: Vec<String> = mysql::expand_tables(&settings.tables, &existing)
            .into_iter()
            .filter(|t| t.from_pattern && !taken.contains(&t.name))
            .map(|t| t.name)
            .collect();
        new.extend(
            kept.iter()
                .filter(|t| !existing.contains(t))
                .map(|t| format!("{t} (gone)")),
        );
        if !new.is_empty() {
            *found.lock().unwrap_or_else(|p| p.into_inner()) = new;
            round.request();
            return;
        }
    }
}

/// `generate`: insert demo orders at `rate` rows/s until `total` or `stop`.
pub fn generate(
    settings: &Settings,
    rate: f64,
    total: Option<u64>,
    stop: impl Future<Output = ()> + 'static,
) -> Result<GeneratorReport> {
    let settings = settings.clone();
    actix::System::new().block_on(async move {
        let shutdown = Shutdown::new();
        shutdown_on(stop, &shutdown, "stopping the generator");
        let db = connect_retrying(&settings, &shutdown, || {
            orm_connect(&settings.source_url, Side::Source)
        })
        .await?;
        let (tx, rx) = oneshot::channel();
        let generator = Generator::new(db, rate, total, tx).start();
        let s = shutdown.clone();
        actix::spawn(async move {
            s.requested_async().await;
            generator.do_send(StopGenerator);
        });
        let mut report = rx
            .await
            .map_err(|_| Error::Other("the generator stopped without a report".into()))?;
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
        crate::http::start(&settings)?;
        let Planned {
            settings, plans, ..
        } = plan(settings, &shutdown).await?;
        let names: Vec<String> = settings.tables.iter().map(|t| t.name.clone()).collect();
        let ownership = Ownership::claim(&settings, &names, &shutdown).await?;
        let planned = prepare(&settings, plans, &ownership, &shutdown).await?;
        let source = orm_connect(&settings.source_url, Side::Source).await?;
        let target = orm_connect(&settings.target_url, Side::Target).await?;
        let (gen_tx, _gen_rx) = oneshot::channel();
        let generator = Generator::new(source.clone(), rate, None, gen_tx).start();
        let (done_tx, done_rx) = oneshot::channel();
        Supervisor::new(
            settings.clone(),
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
            postgres::types::qualified(&settings.target_schema, "orders")
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
            20 * settings.pipeline.poll_interval_ms + settings.safety_lag_ms + 500,
        );
        let s = shutdown.clone();
        actix::spawn(async move {
            generator_stop.requested_async().await;
            generator.do_send(StopGenerator);
            tokio::time::sleep(grace).await;
            s.request();
        });
        let outcome = done_rx.await.ok();
        printer.abort();
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

/// A string as an SQL literal, for statements sluice prints for the user to run.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
