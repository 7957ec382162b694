//! The replication state table. What a stored `position` means is defined on the entity,
//! `entities::replication_state`: the keyset of the last source row whose write committed
//! on the target, advanced only in the transaction that writes those rows.

use sea_orm_migration::prelude::*;
use sea_orm_migration::MigratorTraitSelf;

/// Creates `sluice.replication_state`.
pub struct State;

impl MigratorTraitSelf for State {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateState),
            Box::new(CreateDeadLetters),
            Box::new(AddDeferredKey),
        ]
    }
    fn migration_table_name(&self) -> DynIden {
        "state_migrations".into_iden()
    }
}

struct CreateState;

impl MigrationName for CreateState {
    fn name(&self) -> &str {
        "m20261125_000002_create_replication_state"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateState {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Columns are documented on the entity; the SQL is spelled out so the types are
        // exactly these (jsonb, timestamptz) whatever sea-orm's defaults become.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS sluice.replication_state (
                    table_name      text PRIMARY KEY,
                    key_columns     jsonb NOT NULL,
                    position        jsonb,
                    rows_replicated bigint NOT NULL DEFAULT 0,
                    updated_at      timestamptz NOT NULL DEFAULT now(),
                    last_error      text
                )",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS sluice.replication_state")
            .await?;
        Ok(())
    }
}

/// `sluice.dead_letters`: rows PostgreSQL refused while `on_bad_row = "dead_letter"`, each
/// with its table, primary key, full row (column name → typed value, as `json` so NUL
/// escapes survive) and the error. Written in the same transaction as the batch it came in.
struct CreateDeadLetters;

impl MigrationName for CreateDeadLetters {
    fn name(&self) -> &str {
        "m20261125_000003_create_dead_letters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateDeadLetters {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS sluice.dead_letters (
                    id          bigserial PRIMARY KEY,
                    table_name  text NOT NULL,
                    key         json NOT NULL,
                    row         json NOT NULL,
                    error       text NOT NULL,
                    created_at  timestamptz NOT NULL DEFAULT now()
                )",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS sluice.dead_letters")
            .await?;
        Ok(())
    }
}

/// `replication_state.deferred_key`: during an initial load into an empty target table,
/// the name of the primary-key constraint sluice dropped so rows load without index
/// maintenance; NULL once the key is built again (see the entity).
struct AddDeferredKey;

impl MigrationName for AddDeferredKey {
    fn name(&self) -> &str {
        "m20261125_000004_add_deferred_key"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddDeferredKey {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE sluice.replication_state ADD COLUMN IF NOT EXISTS deferred_key text",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE sluice.replication_state DROP COLUMN IF EXISTS deferred_key",
            )
            .await?;
        Ok(())
    }
}
