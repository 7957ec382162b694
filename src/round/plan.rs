//! Which tables a round replicates: the configuration's tables and patterns, introspected
//! on the source for the capture mode ([`plan`]), and, while a round runs, the source's
//! tables watched for ones a pattern takes or that are gone ([`discover_tables`]).

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::retry::connecting;
use crate::shutdown::Shutdown;
use crate::sink::postgres::ddl;
use crate::source::capture::Mode;
use crate::source::{mysql, TablePlan};

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
    let mut src = connecting(&settings, shutdown, || mysql::connect(&settings.source.url)).await?;
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
    // What the capture mode needs of the server (binlog settings and privileges; polling:
    // a zone for DATETIME cursors the server can convert to) stops here (exit 2).
    Mode::of(&settings)
        .check_server(&mut src, &settings)
        .await?;
    // Every table is checked, and every definition problem reported at once, each with its
    // fix: one round trip for a schema with several.
    let mut plans = Vec::with_capacity(settings.tables.len());
    let mut kept = Vec::with_capacity(settings.tables.len());
    let mut problems = Vec::new();
    let mut bad_tables = 0;
    let mut targets: Vec<(String, String)> = Vec::new();
    for t in &settings.tables {
        let map = crate::sink::postgres::map::TableMap::of(t, &settings.target.schema, None);
        let planned = match crate::source::plan_table(&mut src, &settings, t).await {
            Ok(plan) => {
                let mut found = map.problems(plan.model(), t.from_pattern || t.is_pattern());
                if found.is_empty() {
                    if let Err(e) = ddl::check_names(&map.model(plan.model())) {
                        found.push(e);
                    }
                }
                match found.len() {
                    0 => Ok(plan),
                    _ => Err(found),
                }
            }
            Err(e @ Error::Schema(_)) if !t.exclude_columns.is_empty() && !t.from_pattern => {
                // A problem with exclude_columns: the rest of the mapping is checked against
                // the table with every column, so that every problem shows at once.
                let whole = crate::config::TableSettings {
                    exclude_columns: Vec::new(),
                    ..t.clone()
                };
                let mut found = vec![e];
                if let Ok(plan) = crate::source::plan_table(&mut src, &settings, &whole).await {
                    found.extend(map.problems(plan.model(), t.is_pattern()));
                }
                Err(found)
            }
            Err(e) => Err(vec![e]),
        };
        let target = map.qualified(&t.name);
        match targets.iter().find(|(_, q)| *q == target) {
            Some((other, _)) if planned.is_ok() => {
                problems.push(Error::Config(format!(
                    "tables {other:?} and {:?} would both land in {target}; give one another `target`",
                    t.name
                )));
                bad_tables += 1;
                continue;
            }
            _ => targets.push((t.name.clone(), target)),
        }
        match planned {
            Ok(plan) => {
                plans.push(plan);
                kept.push(t.clone());
            }
            Err(mut found) => {
                if let Some(i) = found
                    .iter()
                    .position(|e| !matches!(e, Error::Schema(_) | Error::Config(_)))
                {
                    return Err(found.swap_remove(i));
                }
                if t.from_pattern {
                    for e in found {
                        warn!(table = %t.name, reason = %e, "a table a [[tables]] pattern takes cannot be replicated; left out");
                    }
                } else {
                    bad_tables += 1;
                    problems.extend(found);
                }
            }
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
            "{bad_tables} of the {listed} tables cannot be replicated as configured ({n} problems):\n  - {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  - ")
        ))),
    }
}

/// How often the source's table list is looked at for new tables a pattern takes.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// Looks at the source's tables every [`DISCOVER_EVERY`] until `round` ends; when a pattern
/// takes a table not among `taken`, or a table a pattern took (`kept`) is gone, records it in
/// `found` and ends the round.
pub async fn discover_tables(
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
            conn = mysql::connect(&settings.source.url).await.ok();
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
