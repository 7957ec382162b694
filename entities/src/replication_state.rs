//! Replication progress: one row per pipeline and source table, stored in
//! `sluice.replication_state` on the target.
//!
//! `position` is where the source is for that table, as the source wrote it; sluice's
//! pipeline never looks inside. Every change the source produced at or before it has been
//! applied on the target; every change after it is still to be applied. The row is only
//! ever updated in the same PostgreSQL transaction that applies the changes it covers, only
//! ever moves forward, and only by the table's current owner (`owner_epoch`), so after a
//! crash at any instant the target holds exactly the changes `position` says. NULL before
//! the first batch.
//!
//! Polling writes `{"keyset": {"columns": [...], "values": [...]}}`: the values of the
//! keyset columns (the cursor columns, then the primary-key columns not already among
//! them), as typed JSON, of the last source row whose write is committed. Every source row
//! whose keyset is greater than it (in the source's own ordering) is still to be read.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(schema_name = "sluice", table_name = "replication_state")]
pub struct Model {
    /// The pipeline (`[pipeline] name`, by default `<source database>/<target schema>`).
    /// `''` on rows stored before pipelines had names, until a pipeline adopts them.
    #[sea_orm(primary_key, auto_increment = false)]
    pub pipeline: String,
    /// The source table's name, as configured.
    #[sea_orm(primary_key, auto_increment = false)]
    pub table_name: String,
    /// The position, as the source wrote it; NULL before the first batch.
    pub position: Option<Json>,
    /// Changes applied to the target by sluice for this table, all time.
    pub rows_replicated: i64,
    /// When the last batch committed.
    pub updated_at: DateTimeWithTimeZone,
    /// The last error that stopped or delayed this table's pipeline, cleared by the next commit.
    pub last_error: Option<String>,
    /// During an initial load into an empty target table: the name of the primary-key
    /// constraint sluice dropped so the backlog loads without index maintenance. It is
    /// built again (duplicates from rows updated mid-load resolved to their newest
    /// version) in the transaction that clears this, once the source is caught up.
    /// NULL otherwise.
    pub deferred_key: Option<String>,
    /// Bumped by every process that takes the table over; each position write checks it,
    /// so a process that lost the table can never write again.
    pub owner_epoch: i64,
    /// The process that holds the table (`host:pid`), since it took it.
    pub owner: Option<String>,
    /// When the newest change the position covers happened on the source, when the source
    /// says (binlog capture: the transaction's commit time).
    pub source_time: Option<DateTimeWithTimeZone>,
    /// The last background comparison of source and target (`[verify] interval_s`), as
    /// `verify::TableReport` serialises it; NULL before the first.
    pub verify: Option<Json>,
    /// When `sluice snapshot` asked for the table to be copied again, until the run that
    /// holds it takes the request (it empties the target table and copies it from the
    /// source, beside the stream of the others); NULL otherwise.
    pub snapshot_requested: Option<DateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
