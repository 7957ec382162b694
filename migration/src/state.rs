//! The replication state table. What a stored `position` means is defined on the entity,
//! `entities::replication_state`: where the source is for that table, as the source wrote
//! it, advanced only in the transaction that writes the changes it covers, and only by the
//! table's current owner (`owner_epoch`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::MigratorTraitSelf;

/// Creates `sluice.replication_state`.
pub struct State;

impl MigratorTraitSelf for State {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateState),
            Box::new(CreateDeadLetters),
            Box::new(ADD_DEFERRED_KEY),
            Box::new(PipelinesAndOwners),
            Box::new(ADD_SOURCE_TIME),
            Box::new(CREATE_SCHEMA_HISTORY),
            Box::new(ADD_VERIFY),
            Box::new(CREATE_MEMBERS),
            Box::new(ADD_SNAPSHOT_REQUESTED),
            Box::new(ADD_HISTORY_MAPPING),
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

/// State keyed by pipeline, and fenced ownership:
/// - `pipeline` joins the key (`(pipeline, table_name)`), so two pipelines into one target
///   (two source databases, or two target schemas) never share a table's position. Rows
///   stored before pipelines had names get `''` and are adopted by the first pipeline that
///   claims their table.
/// - `owner_epoch` is bumped by each process that takes a table over, and every position
///   write checks it, so a process that lost ownership can never write again; `owner` says
///   which process holds it.
/// - `position` becomes self-describing: a polling position `[v1, v2]` with its
///   `key_columns` turns into `{"keyset": {"columns": [...], "values": [v1, v2]}}`, and the
///   separate `key_columns` column goes.
/// - `dead_letters` gets `pipeline` too.
struct PipelinesAndOwners;

impl MigrationName for PipelinesAndOwners {
    fn name(&self) -> &str {
        "m20261126_000005_pipelines_and_owners"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PipelinesAndOwners {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE sluice.replication_state
                   ADD COLUMN IF NOT EXISTS pipeline text NOT NULL DEFAULT '',
                   ADD COLUMN IF NOT EXISTS owner_epoch bigint NOT NULL DEFAULT 0,
                   ADD COLUMN IF NOT EXISTS owner text;
                 UPDATE sluice.replication_state
                   SET position = jsonb_build_object('keyset',
                         jsonb_build_object('columns', key_columns, 'values', position))
                   WHERE jsonb_typeof(position) = 'array';
                 ALTER TABLE sluice.replication_state
                   DROP CONSTRAINT IF EXISTS replication_state_pkey;
                 ALTER TABLE sluice.replication_state
                   ADD CONSTRAINT replication_state_pkey PRIMARY KEY (pipeline, table_name),
                   DROP COLUMN IF EXISTS key_columns;
                 ALTER TABLE sluice.dead_letters
                   ADD COLUMN IF NOT EXISTS pipeline text NOT NULL DEFAULT ''",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE sluice.dead_letters DROP COLUMN IF EXISTS pipeline;
                 ALTER TABLE sluice.replication_state
                   ADD COLUMN IF NOT EXISTS key_columns jsonb NOT NULL DEFAULT '[]';
                 UPDATE sluice.replication_state
                   SET key_columns = position->'keyset'->'columns',
                       position = position->'keyset'->'values'
                   WHERE position ? 'keyset';
                 ALTER TABLE sluice.replication_state
                   DROP CONSTRAINT IF EXISTS replication_state_pkey;
                 ALTER TABLE sluice.replication_state
                   DROP COLUMN IF EXISTS owner,
                   DROP COLUMN IF EXISTS owner_epoch,
                   DROP COLUMN IF EXISTS pipeline,
                   ADD CONSTRAINT replication_state_pkey PRIMARY KEY (table_name)",
            )
            .await?;
        Ok(())
    }
}

/// Adds one nullable column to a table of the `sluice` schema (`sluice.replication_state`
/// unless `table` says otherwise; what it holds is documented on the entity or the constant).
struct AddColumn {
    migration: &'static str,
    table: &'static str,
    column: &'static str,
    sql_type: &'static str,
}

/// `deferred_key`: during an initial load into an empty target table, the name of the
/// primary-key constraint sluice dropped so rows load without index maintenance; NULL once
/// the key is built again.
const ADD_DEFERRED_KEY: AddColumn = AddColumn {
    migration: "m20261125_000004_add_deferred_key",
    table: "replication_state",
    column: "deferred_key",
    sql_type: "text",
};

/// `source_time`: when the newest change the position covers happened on the source (a
/// binlog transaction's commit time), for the lag `status` shows.
const ADD_SOURCE_TIME: AddColumn = AddColumn {
    migration: "m20261126_000006_add_source_time",
    table: "replication_state",
    column: "source_time",
    sql_type: "timestamptz",
};

/// `verify`: the last background comparison of the table (`[verify] interval_s`), as a JSON
/// report: when, rows compared, rows missing / extra / different, rows repaired.
const ADD_VERIFY: AddColumn = AddColumn {
    migration: "m20261127_000008_add_verify",
    table: "replication_state",
    column: "verify",
    sql_type: "jsonb",
};

/// `snapshot_requested`: when `sluice snapshot` asked for the table to be copied again; the
/// run that holds the table takes the request (and clears it) as it readies the table.
const ADD_SNAPSHOT_REQUESTED: AddColumn = AddColumn {
    migration: "m20261206_000010_add_snapshot_requested",
    table: "replication_state",
    column: "snapshot_requested",
    sql_type: "timestamptz",
};

/// `sluice.schema_history.mapping`: the table's column mapping in force from that shape on,
/// as `status` shows it (`lands in crm.people; excludes password_hash; masks email
/// (sha256)`); NULL without one. A mapping changed between runs is recorded as a new version.
const ADD_HISTORY_MAPPING: AddColumn = AddColumn {
    migration: "m20261206_000011_add_history_mapping",
    table: "schema_history",
    column: "mapping",
    sql_type: "text",
};

impl MigrationName for AddColumn {
    fn name(&self) -> &str {
        self.migration
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddColumn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = format!(
            "ALTER TABLE sluice.{} ADD COLUMN IF NOT EXISTS {} {}",
            self.table, self.column, self.sql_type
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = format!(
            "ALTER TABLE sluice.{} DROP COLUMN IF EXISTS {}",
            self.table, self.column
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }
}

/// Creates one table of the `sluice` schema: `sluice.<table> (<columns>)` (what it holds is
/// documented on the constant).
struct CreateTable {
    migration: &'static str,
    table: &'static str,
    columns: &'static str,
}

impl MigrationName for CreateTable {
    fn name(&self) -> &str {
        self.migration
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS sluice.{} ({})",
            self.table, self.columns
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = format!("DROP TABLE IF EXISTS sluice.{}", self.table);
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }
}

/// `sluice.schema_history`: each shape of each replicated table, as sluice followed it. One
/// row per (pipeline, table, version): the table model (`model`, the columns and key the
/// target's rows are in from then on), the source position of the first change in that shape,
/// the statements run on the target (`ddl`, empty for the first shape and for changes that
/// needed none) and when. Written in the transaction that applies the change, so it never
/// says more than the target holds; the newest row is where a restart resumes the table's
/// shape.
const CREATE_SCHEMA_HISTORY: CreateTable = CreateTable {
    migration: "m20261126_000007_create_schema_history",
    table: "schema_history",
    columns: "
        pipeline    text NOT NULL,
        table_name  text NOT NULL,
        version     integer NOT NULL,
        position    jsonb,
        model       jsonb NOT NULL,
        ddl         text[] NOT NULL DEFAULT '{}',
        applied_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (pipeline, table_name, version)",
};

/// `sluice.members`: the `run` processes of each pipeline, for sharing its tables. One row per
/// (pipeline, member): the member's `host:pid`, the host, the PostgreSQL session it
/// heartbeats through (`session_pid`: the member is gone when the session is), the tables it
/// holds, when it started and its last heartbeat (every second).
const CREATE_MEMBERS: CreateTable = CreateTable {
    migration: "m20261127_000009_create_members",
    table: "members",
    columns: "
        pipeline      text NOT NULL,
        member        text NOT NULL,
        host          text NOT NULL,
        session_pid   integer NOT NULL,
        tables        text[] NOT NULL DEFAULT '{}',
        started_at    timestamptz NOT NULL DEFAULT now(),
        heartbeat_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (pipeline, member)",
};
