//! sea-orm models of the tables sluice itself owns.
//!
//! - [`orders`]: the demo table. The same shape lives on the source (MySQL/MariaDB,
//!   `created DATETIME(6)`) and on the target (PostgreSQL, `created timestamp(6)`).
//! - [`replication_state`]: one row per pipeline and replicated table, in the `sluice` schema on the
//!   target. Its `position` is where the source is for that table; see the module for
//!   what it means exactly.

pub mod orders;
pub mod replication_state;

/// Schema on the target that holds sluice's own bookkeeping tables.
pub const STATE_SCHEMA: &str = "sluice";
