//! Replication progress: one row per source table, stored in `sluice.replication_state` on
//! the target.
//!
//! `position` is the watermark: a JSON array holding the values of the keyset columns
//! (`key_columns`: the cursor columns, then the primary-key columns not already among
//! them) of the last source row whose write is committed on the target. Every source row
//! whose keyset is greater than `position` (in the source's own ordering) is still to be
//! read; every row at or below it has been written. The row is only ever updated in the
//! same PostgreSQL transaction that writes the rows it covers, and only ever moves forward,
//! so after a crash at any instant the target holds exactly the rows `position` says.
//! `position` is NULL before the first batch.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(schema_name = "sluice", table_name = "replication_state")]
pub struct Model {
    /// The source table's name, as configured.
    #[sea_orm(primary_key, auto_increment = false)]
    pub table_name: String,
    /// Names of the keyset columns, in keyset order (JSON array of strings).
    pub key_columns: Json,
    /// The watermark: JSON array of typed values, one per key column; NULL before the first batch.
    pub position: Option<Json>,
    /// Rows written to the target by sluice for this table, all time.
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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
