//! One round of `run`, in the order it happens: [`plan`] the tables (introspected on the
//! source, patterns expanded), [`group::claim`] this member's share of them, [`prepare`]
//! their state and target tables, then the pipeline's supervisor runs them. Beside a round,
//! [`group::watch_group`] and [`discover_tables`] end it when the group or the source's
//! tables change.

pub mod group;
mod plan;
mod prepare;

pub use plan::{discover_tables, plan, Planned};
pub use prepare::prepare;
