//! This process as a member of its pipeline's group (`run` only): which tables it claims
//! ([`claim`]: every table with `--once`, else its fair share beside the live members), and
//! the watch that ends a round when its share changes ([`watch_group`]).

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::config::{owner_id, Settings};
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::source::TablePlan;
use crate::state::members::{self, Group};
use crate::state::ownership::Ownership;

/// What this member holds for a round: the settings and plans of its tables alone.
pub struct Claimed {
    pub settings: Settings,
    pub plans: Vec<TablePlan>,
    pub names: Vec<String>,
    pub ownership: Ownership,
}

/// Claims the round's tables. `run --once` takes every table or none; `run` takes its
/// share of them beside the pipeline's other members (see [`crate::state::members`]).
pub async fn claim(
    group: &Group,
    once: bool,
    expanded: Settings,
    plans: Vec<TablePlan>,
    shutdown: &Shutdown,
) -> Result<Claimed> {
    let names: Vec<String> = expanded.tables.iter().map(|t| t.name.clone()).collect();
    if once {
        let ownership = Ownership::claim(&expanded, &names, shutdown).await?;
        return Ok(Claimed {
            settings: expanded,
            plans,
            names,
            ownership,
        });
    }
    // Without a view of the group (the target just came back), this member reaches for
    // every free table; the next look rebalances.
    let me = owner_id();
    let (live, share, order) = group_view(group, &names)
        .await
        .unwrap_or_else(|| (vec![me], names.len(), (0..names.len()).collect()));
    let (ownership, taken) =
        Ownership::claim_some(&expanded, &names, &order, share, shutdown).await?;
    if taken.len() < names.len() {
        info!(
            members = live.len(),
            share,
            held = taken.len(),
            tables = names.len(),
            "sharing the pipeline's tables with its other members"
        );
    }
    let mut plans: Vec<Option<_>> = plans.into_iter().map(Some).collect();
    let plans: Vec<_> = taken.iter().filter_map(|&i| plans[i].take()).collect();
    let tables: Vec<_> = taken.iter().map(|&i| expanded.tables[i].clone()).collect();
    let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    Ok(Claimed {
        settings: Settings { tables, ..expanded },
        plans,
        names,
        ownership,
    })
}

/// How often a member looks at the group: who is live, and which tables are free.
const GROUP_EVERY: Duration = Duration::from_secs(1);

/// This process's view of the pipeline's group: the live members (itself included), its
/// share of `tables`, and the order in which it reaches for them. `None` when the target
/// cannot say now.
pub async fn group_view(
    group: &Group,
    tables: &[String],
) -> Option<(Vec<String>, usize, Vec<usize>)> {
    let me = owner_id();
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
    let share = members::share(tables.len(), live.len());
    let order = members::preference(&me, &live, tables);
    Some((live, share, order))
}

/// Ends `round` when this member should hold another number of tables than `held`: more
/// than its share (members joined: it lets the excess go), or fewer while some table is free
/// (a member left or died: it takes its share).
pub async fn watch_group(group: Arc<Group>, tables: Vec<String>, held: usize, round: Shutdown) {
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
