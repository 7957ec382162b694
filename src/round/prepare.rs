//! Readying a round's tables once they are owned: each table's stored state loaded, its
//! plan brought to the shape recorded at its position (binlog), and its target table
//! readied ([`PgSink::prepare_table`]). A standby that took a table over resumes where the
//! owner stopped.

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::pipeline::supervisor::PlannedTable;
use crate::retry::connecting;
use crate::shutdown::Shutdown;
use crate::sink::postgres::{self, initial_load, PgSink, PrepareTable};
use crate::source::capture::Mode;
use crate::source::TablePlan;
use crate::state::ownership::Ownership;
use crate::state::{self, StateKey};

/// Loads each planned table's state and readies its target table: everything `run` must
/// know before it starts the pipeline.
pub async fn prepare(
    settings: &Settings,
    plans: Vec<TablePlan>,
    ownership: &Ownership,
    shutdown: &Shutdown,
) -> Result<Vec<PlannedTable>> {
    let mut tgt = connecting(settings, shutdown, || {
        postgres::connect(&settings.target.url, "setup")
    })
    .await?;
    let mode = Mode::of(settings);
    // Binlog capture copies a table beside the stream when another table streams already:
    // the stream writes that table's changes while it is copied, so its key stays.
    let mut streaming = false;
    if mode.is_binlog() {
        for plan in &plans {
            let key = StateKey::new(&settings.pipeline_name, &plan.model().name);
            if let Some(s) = state::load(&mut tgt, &key).await? {
                streaming |= s.position.is_some()
                    && !s.snapshot_requested
                    && !plan.will_load(s.position.as_ref());
            }
        }
    }
    let mut planned = Vec::with_capacity(plans.len());
    for (i, mut plan) in plans.into_iter().enumerate() {
        let name = plan.model().name.clone();
        let map = crate::sink::postgres::map::TableMap::for_table(settings, i);
        let key = StateKey::new(&settings.pipeline_name, &name);
        let epoch = ownership.epoch(i);
        let (mut start, mut deferred_key, requested) = match state::load(&mut tgt, &key).await? {
            Some(s) => (s.position, s.deferred_key, s.snapshot_requested),
            None => (None, None, false),
        };
        if requested {
            let target = map.qualified(&name);
            match state::take_snapshot_request(&mut tgt, &key, epoch, &target).await? {
                Ok(()) => {
                    info!(table = %name, target = %target, "copying the table again, as `sluice snapshot` asked: its target table was emptied, and it is copied from the source while the other tables go on");
                    start = None;
                }
                Err(why) => warn!(table = %name, "{why}"),
            }
        }
        // A table replicated before whose target table is not there (its `target` changed,
        // or it was dropped by hand): resuming would fill it with the changes from the
        // position on only. It is copied again from the source instead.
        if start.is_some() && deferred_key.is_none() {
            let have =
                postgres::reshape::target_columns(&mut tgt, &map.schema, &map.table(&name)).await?;
            if have.is_empty() {
                warn!(table = %name, target = %map.qualified(&name), "the table has a stored position but its target table does not exist (its [[tables]] target changed, or it was dropped): it is copied again from the source");
                start = None;
            }
        }
        let (recorded, recorded_mapping) = match state::latest_recorded(&mut tgt, &key).await? {
            Some((shape, mapping)) => (Some(shape), mapping),
            None => (None, None),
        };
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
                b.start_in(rec, settings.source.zero_dates)?;
            }
        }
        // A mapping changed since the newest shape was recorded: a new version records it.
        let remapped = recorded.is_some() && recorded_mapping.as_deref() != map.description();
        plan.set_version(state::next_version(
            recorded.as_ref(),
            plan.model(),
            remapped,
            1,
        ));
        // A table already replicated gets the source's indexes now (one whose load is still
        // to come gets them once it is loaded; one whose stream starts in an older shape, as
        // the stream reaches the source's present).
        let sync_indexes = settings.pipeline.indexes
            && start.is_some()
            && !plan.will_load(start.as_ref())
            && deferred_key.is_none()
            && !follow_later;
        PgSink::prepare_table(
            &mut tgt,
            PrepareTable {
                map: &map,
                key: &key,
                model: plan.model(),
                recorded: recorded.as_ref(),
                start: start.as_ref(),
                deferred_key: deferred_key.is_some(),
                on_drop,
                follow_later,
                sync_indexes: sync_indexes.then_some(mode.transaction_ordered()),
                lock_wait: settings.lock_wait(),
            },
        )
        .await?;
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
            && !streaming
            && settings.pipeline.defer_key
            && plan.estimated_rows() >= settings.pipeline.defer_key_min_rows
        {
            deferred_key = initial_load::defer_key(
                &mut tgt,
                &key,
                epoch,
                &map.schema,
                &map.model(plan.model()),
                plan.estimated_rows(),
                settings.lock_wait(),
            )
            .await?;
        }
        let handle = crate::telemetry::register(&plan.model().name);
        planned.push(PlannedTable {
            plan: Arc::new(plan),
            start,
            deferred_key,
            epoch,
            handle,
        });
    }
    Ok(planned)
}

/// A string as an SQL literal, for statements sluice prints for the user to run.
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// How often a run looks for `sluice snapshot` requests for the tables it holds.
const REQUESTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends the round when `sluice snapshot` asks for one of `names` (the tables this member
/// holds) to be copied again: the next round's [`prepare`] takes the request, every other
/// table resuming from its committed position.
/// Sets `asked` when it ends the round.
pub async fn watch_snapshot_requests(
    settings: Settings,
    names: Vec<String>,
    round: Shutdown,
    asked: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut conn = None;
    while !round.sleep(REQUESTS_EVERY).await {
        if conn.is_none() {
            conn = postgres::connect(&settings.target.url, "requests")
                .await
                .ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        match state::snapshot_requests(c, &settings.pipeline_name, &names).await {
            Ok(tables) if !tables.is_empty() => {
                info!(tables = %tables.join(", "), "`sluice snapshot` asked for tables to be copied again; taking the request (the round ends, every table resuming from its committed position)");
                asked.store(true, std::sync::atomic::Ordering::Relaxed);
                round.request();
                return;
            }
            Ok(_) => {}
            Err(_) => conn = None,
        }
    }
}
