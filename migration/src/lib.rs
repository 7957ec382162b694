//! Schema that sluice owns, as sea-orm migrations.
//!
//! Three migrators, because the tables live in two databases and one of them is optional:
//! - [`create_source_demo`]: the demo `orders` table on the source (MySQL/MariaDB),
//!   untracked: nothing of sluice's own is kept in the source database.
//! - [`TargetDemo`]: the demo `orders` table on the target (PostgreSQL), in the configured
//!   target schema. It mirrors the source's columns and has nothing extra.
//! - [`State`]: the `sluice` schema and its `replication_state` table on the target. `run`
//!   applies it on every start, `migrate` too.
//!
//! Both target migrators are tracked in tables inside the `sluice` schema (see
//! [`run_on_target`]), so the user's schemas hold nothing but their own tables.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

mod demo;
mod state;

pub use demo::{create_source_demo, TargetDemo};
pub use sea_orm_migration::MigratorTraitSelf;
pub use state::State;

/// Applies `migrator` on the target inside one transaction whose `search_path` is the
/// `sluice` schema, so sea-orm's unqualified tracking table lands there and not in the
/// user's schema. Tables the migrations create are always schema-qualified.
pub async fn run_on_target<M: MigratorTraitSelf>(
    db: &DatabaseConnection,
    migrator: &M,
) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    // Serialises concurrent `migrate`/`run` starts against the same target.
    tx.execute_unprepared("SELECT pg_advisory_xact_lock(7361626564)")
        .await?;
    tx.execute_unprepared(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        entities::STATE_SCHEMA
    ))
    .await?;
    tx.execute_unprepared(&format!(
        "SET LOCAL search_path TO \"{}\"",
        entities::STATE_SCHEMA
    ))
    .await?;
    migrator.up(&tx, None).await?;
    tx.commit().await
}
