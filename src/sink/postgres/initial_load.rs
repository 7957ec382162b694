//! The initial load with the primary key deferred.
//!
//! Keeping a primary-key index up to date is most of the cost of loading a large backlog
//! into PostgreSQL. So when a table has no position yet, its target table is empty and the
//! source holds enough rows, [`defer_key`] drops the target's primary-key constraint and
//! records its name in `sluice.replication_state.deferred_key` (one transaction); batches
//! are then plain COPYs without index maintenance, and once the source has caught up the
//! writer builds the key again ([`TableWriter::build_key`]), in one transaction with
//! clearing `deferred_key`.
//!
//! During the load a re-delivered batch (after a lost COMMIT) is copied again, and a row
//! updated during the load is read again: both leave older copies, which the key build
//! removes (every copy but the one with the greatest version columns, or the latest
//! physical copy among equals).

use sea_orm::sqlx::{self, AssertSqlSafe, Connection, PgConnection};

use super::lock::{self, Ddl, LockWait};
use super::types::{qualified, quote};
use super::writer::TableWriter;
use crate::error::{on_target as tgt, Error, Result, Side};
use crate::model::TableModel;
use crate::state::{self, StateKey};

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Starts an initial load with the primary key deferred, when it applies: the table has no
/// position and the source holds enough rows (both checked by the caller), its target
/// table is empty, and its primary key is a constraint no foreign key depends on.
/// Drops the key and records its name, in one transaction that checks ownership (`epoch`);
/// returns the name.
pub async fn defer_key(
    conn: &mut PgConnection,
    key: &StateKey,
    epoch: i64,
    target_schema: &str,
    t: &TableModel,
    source_rows: u64,
    wait: LockWait,
) -> Result<Option<String>> {
    let name = qualified(target_schema, &t.name);
    let mut tx = conn
        .begin()
        .await
        .map_err(tgt("beginning the initial-load transaction"))?;
    // Nobody may add rows between the emptiness check and the drop.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .map_err(tgt(format!("locking {name} for the initial load")))?;
    let empty: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {name})"
    )))
    .fetch_one(&mut *tx)
    .await
    .map_err(tgt(format!("checking whether {name} is empty")))?;
    if !empty {
        return Ok(None);
    }
    // The key constraint, unless another table's foreign key references it (dropping it
    // would drop theirs).
    let constraint: Option<(String, bool)> = sqlx::query_as(
        "SELECT c.conname::text, EXISTS (SELECT 1 FROM pg_constraint f \
                WHERE f.contype = 'f' AND f.confrelid = c.conrelid) \
         FROM pg_constraint c WHERE c.conrelid = $1::text::regclass AND c.contype = 'p'",
    )
    .bind(&name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(tgt(format!("reading the primary key of {name}")))?;
    let constraint = match constraint {
        Some((c, false)) => c,
        Some((c, true)) => {
            tracing::info!(table = %t.name, constraint = %c, "a foreign key references the target's primary key: the initial load keeps it");
            return Ok(None);
        }
        None => return Ok(None),
    };
    // An ACCESS EXCLUSIVE lock: tried briefly, without queueing the table's readers; a
    // table someone keeps reading gets the keyed load instead.
    let brief = LockWait {
        lock_timeout: wait.lock_timeout,
        patience: wait.patience.min(wait.lock_timeout * 3),
    };
    let drop = format!("ALTER TABLE {name} DROP CONSTRAINT {}", quote(&constraint));
    if let Ddl::Waited(holders) = lock::ddl(
        &mut tx,
        &name,
        &drop,
        "dropping the primary key for the initial load",
        brief,
        None,
    )
    .await?
    {
        let who: Vec<String> = holders.iter().map(ToString::to_string).collect();
        tracing::info!(table = %t.name, held_by = %who.join("; "), "other sessions hold the target table: the initial load keeps its primary key rather than wait for them");
        return Ok(None);
    }
    state::set_deferred_key(&mut tx, key, epoch, Some(&constraint)).await?;
    tx.commit()
        .await
        .map_err(tgt("committing the start of the initial load"))?;
    tracing::info!(table = %t.name, source_rows_estimated = source_rows, constraint = %constraint, "initial load into an empty table: primary key dropped while the backlog loads");
    Ok(Some(constraint))
}

impl TableWriter {
    /// Ends an initial load: builds the primary key dropped by [`defer_key`] and clears
    /// `deferred_key`, in one transaction, so a crash leaves either the load still running
    /// or the key in place. If the index finds duplicates (rows updated during the load,
    /// batches copied twice), every copy but the newest is deleted first. The index is
    /// built with `CREATE UNIQUE INDEX` (readers of the target go on reading meanwhile) and
    /// then becomes the constraint, under its original name. Returns the copies removed, or
    /// `None` when no key was deferred.
    pub async fn build_key(&mut self, conn: &mut PgConnection) -> Result<Option<u64>> {
        let Some(constraint) = self.deferred_key.clone() else {
            return Ok(None);
        };
        let t = self.model();
        let target = self.target().to_string();
        let pk: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| quote(&t.columns[i].name))
            .collect();
        let version: Vec<String> = self
            .version_columns()
            .iter()
            .map(|&i| quote(&t.columns[i].name))
            .collect();
        let of = |alias: &str, cols: &[String]| {
            cols.iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let index = quote(&constraint);
        let create = format!(
            "CREATE UNIQUE INDEX {index} ON {target} ({})",
            pk.join(", ")
        );
        let same_key = pk
            .iter()
            .map(|c| format!("a.{c} = b.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let older = if version.is_empty() {
            "a.ctid < b.ctid".to_string()
        } else {
            let (av, bv) = (of("a", &version), of("b", &version));
            format!(
                "(ROW({av}) < ROW({bv}) OR (ROW({av}) IS NOT DISTINCT FROM ROW({bv}) AND a.ctid < b.ctid))"
            )
        };
        let dedupe =
            format!("DELETE FROM {target} a USING {target} b WHERE {same_key} AND {older}");
        let (key, epoch) = (self.key().clone(), self.epoch());
        let mut tx = conn
            .begin()
            .await
            .map_err(tgt(format!("beginning the key build of {:?}", key.table)))?;
        // A retry after a COMMIT whose outcome was lost finds the key already built. (No
        // row lock: status may record a lock wait on the row meanwhile; ownership is
        // checked when the row is updated.)
        if state::deferred_key(&mut tx, &key).await?.is_none() {
            self.deferred_key = None;
            return Ok(Some(0));
        }
        sqlx::raw_sql("SAVEPOINT sluice_key")
            .execute(&mut *tx)
            .await
            .map_err(tgt("SAVEPOINT"))?;
        let mut removed = 0;
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(create.as_str()))
            .execute(&mut *tx)
            .await
        {
            let unique = matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION));
            if !unique {
                return Err(Error::db(
                    Side::Target,
                    format!("building the primary key of {target}"),
                    &e,
                ));
            }
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT sluice_key")
                .execute(&mut *tx)
                .await
                .map_err(tgt("ROLLBACK TO SAVEPOINT"))?;
            removed = sqlx::raw_sql(AssertSqlSafe(dedupe))
                .execute(&mut *tx)
                .await
                .map_err(tgt(format!(
                    "removing older copies of updated rows from {target}"
                )))?
                .rows_affected();
            sqlx::raw_sql(AssertSqlSafe(create.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(tgt(format!("building the primary key of {target}")))?;
        }
        // The index is built (a SHARE lock: readers go on); making it the key takes an
        // ACCESS EXCLUSIVE lock for an instant, waited for without queueing readers.
        self.ddl(
            &mut tx,
            &format!("ALTER TABLE {target} ADD CONSTRAINT {index} PRIMARY KEY USING INDEX {index}"),
            "making the index the primary key",
        )
        .await?;
        state::set_deferred_key(&mut tx, &key, epoch, None).await?;
        crate::failpoint::hit("before_key_commit");
        tx.commit()
            .await
            .map_err(tgt(format!("committing the primary key of {target}")))?;
        self.deferred_key = None;
        // The table now has its key: the next batches go through the keyed path, whose
        // staging table is built like the table.
        self.reconnected();
        Ok(Some(removed))
    }
}
