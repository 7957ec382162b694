//! `run`: rounds of replication until stopped. A round reads plan → claim → prepare →
//! supervise ([`crate::round`]); it ends at a shutdown, when `--once` has caught up, when
//! this member's share of the group changes, or when a pattern's tables change on the
//! source, and the next round starts from the committed positions.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use tokio::sync::oneshot;
use tracing::info;

use super::{apply_state_schema, shutdown_on};
use crate::config::Settings;
use crate::conn::SharedHelpers;
use crate::error::{Error, Result};
use crate::pipeline::supervisor::{RunOutcome, Supervisor};
use crate::round::{self, group, group::Claimed};
use crate::shutdown::Shutdown;
use crate::state::members::Group;

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
        let helpers = SharedHelpers::default();
        crate::http::start(&settings, helpers.clone())?;
        // With patterns, a table created on the source that one takes is picked up: the
        // round in progress ends as a shutdown would (batches in flight committed), and the
        // next starts with it, every table resuming from its committed position.
        let discover = !once && settings.tables.iter().any(|t| t.is_pattern());
        let mut state_schema = false;
        // This process as a member of the pipeline's group (`run` only).
        let group = Arc::new(Group::new(
            &settings.target.url,
            &settings.pipeline_name,
            settings.cluster.member_timeout_ms,
        ));
        let mut standing_by = false;
        loop {
            let this_round = Shutdown::new();
            {
                let (all, this_round) = (shutdown.clone(), this_round.clone());
                actix::spawn(async move {
                    all.requested_async().await;
                    this_round.request();
                });
            }
            let round::Planned {
                settings: expanded,
                plans,
                taken,
            } = round::plan(settings.clone(), &shutdown).await?;
            if !state_schema {
                apply_state_schema(&expanded, &shutdown).await?;
                state_schema = true;
                if !once {
                    actix::spawn(group.clone().heartbeat(shutdown.clone()));
                }
            }
            let all_names: Vec<String> = expanded.tables.iter().map(|t| t.name.clone()).collect();
            let kept: Vec<String> = expanded
                .tables
                .iter()
                .filter(|t| t.from_pattern)
                .map(|t| t.name.clone())
                .collect();
            let Claimed {
                settings: expanded,
                plans,
                names,
                ownership,
            } = group::claim(&group, once, expanded, plans, &shutdown).await?;
            group.held.set(names.clone());
            crate::telemetry::set_standby(names.is_empty());
            crate::telemetry::keep_only(&names);
            if !once {
                actix::spawn(group::watch_group(
                    group.clone(),
                    all_names.clone(),
                    names.len(),
                    this_round.clone(),
                ));
            }
            if names.is_empty() {
                if !standing_by {
                    info!("standing by: the pipeline's other members hold every table; this one takes tables over when a member stops");
                    standing_by = true;
                }
                drop(ownership);
                this_round.requested_async().await;
                if shutdown.requested() {
                    return Ok(RunOutcome::default());
                }
                continue;
            }
            standing_by = false;
            let planned = round::prepare(&expanded, plans, &ownership, &shutdown).await?;
            info!(pipeline = %expanded.pipeline_name, tables = planned.len(), "replicating");
            let progress = crate::progress::start(&expanded, helpers.clone(), names.clone());
            let (done_tx, done_rx) = oneshot::channel();
            let found = Arc::new(std::sync::Mutex::new(Vec::new()));
            let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
            if !once {
                actix::spawn(round::watch_snapshot_requests(
                    expanded.clone(),
                    names.clone(),
                    this_round.clone(),
                    asked.clone(),
                ));
            }
            if discover {
                actix::spawn(round::discover_tables(
                    settings.clone(),
                    taken,
                    kept,
                    this_round.clone(),
                    found.clone(),
                ));
            }
            if !once {
                crate::verify::check::start(
                    &expanded,
                    planned.iter().map(|p| p.handle.clone()),
                    &this_round,
                );
            }
            let wiring = round::wiring(&expanded, &helpers);
            Supervisor::new(expanded, wiring, once, planned, ownership, this_round, done_tx).start();
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
            // `sluice snapshot` asked for a table (a stopped one, perhaps): the next round
            // copies it, every other table resuming from its committed position.
            if asked.load(std::sync::atomic::Ordering::Relaxed) && !shutdown.requested() {
                continue;
            }
            if !once && !discover && !shutdown.requested() && outcome.failures().all(handed_over)
            {
                // The group changed: this member takes its new share.
                continue;
            }
            if discover && !shutdown.requested() && outcome.failures().all(handed_over) {
                if found.is_empty() {
                    info!("the tables a [[tables]] pattern took are gone or done; looking at the source's tables again");
                    // Not at once: what ended the round may still hold.
                    if shutdown.sleep(Duration::from_secs(1)).await {
                        return Ok(outcome);
                    }
                } else {
                    // At once: the other tables wait for the next round only.
                    info!(tables = %found.join(", "), "the tables a [[tables]] pattern takes changed on the source; replicating them as they are now, every table resuming from its committed position");
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
