//! One round of `run`, in the order it happens: [`plan`] the tables (introspected on the
//! source, patterns expanded), [`group::claim`] this member's share of them, [`prepare`]
//! their state and target tables, then the pipeline's supervisor runs them. Beside a round,
//! [`group::watch_group`], [`discover_tables`] and [`watch_snapshot_requests`] end it when
//! the group or the source's tables change, or `sluice snapshot` asks for a table.

pub mod group;
mod plan;
mod prepare;

pub use plan::{discover_tables, plan, Planned};
pub use prepare::{prepare, watch_snapshot_requests};

use std::sync::Arc;

use crate::config::Settings;
use crate::conn::SharedHelpers;
use crate::pipeline::supervisor::Wiring;
use crate::sink::postgres::{PgSink, SinkOptions};
use crate::sink::SinkFactory;
use crate::source::capture::Mode;

/// What the supervisor is handed: the lanes' sinks (one [`PgSink`] each, on a connection of
/// its own) and the process's helper connections.
pub fn wiring(settings: &Settings, helpers: &SharedHelpers) -> Wiring {
    let p = &settings.pipeline;
    let opts = SinkOptions {
        url: settings.target.url.clone(),
        schema: settings.target.schema.clone(),
        pipeline: settings.pipeline_name.clone(),
        on_bad_row: p.on_bad_row,
        copy_format: p.copy_format,
        role: String::new(),
        helpers: helpers.clone(),
        lock_wait: settings.lock_wait(),
        indexes: p
            .indexes
            .then_some(Mode::of(settings).transaction_ordered()),
    };
    let sinks: SinkFactory = Arc::new(move |role, tables| {
        let opts = SinkOptions {
            role,
            ..opts.clone()
        };
        Box::new(PgSink::new(opts, tables))
    });
    Wiring {
        sinks,
        helpers: helpers.clone(),
    }
}
