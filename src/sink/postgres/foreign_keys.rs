//! Foreign-key actions the source applies without a trace in its binlog.
//!
//! InnoDB writes no row event for what its foreign keys cascade: a `DELETE` of a parent row
//! is logged alone, and the children it removed (`ON DELETE CASCADE`), emptied
//! (`ON DELETE SET NULL`) or re-keyed (`ON UPDATE CASCADE`) change silently. So the target
//! carries the same foreign keys between replicated tables, with the same actions, and
//! PostgreSQL applies them as the parent changes arrive, several levels deep if need be.
//!
//! The mirrored constraint is `DEFERRABLE INITIALLY DEFERRED` (its checks wait for the
//! commit, when the whole source transaction is applied, whatever the order of its tables
//! in the batch) and `NOT VALID` (existing rows are not scanned: they are the source's, which
//! kept them valid). It is added once both tables are loaded, under the name
//! `sluice_fk_<source name>`. A foreign key that references columns other than the parent's
//! primary key is not mirrored (the target has no unique key there); that is logged.

use sea_orm::sqlx::{self, AssertSqlSafe, PgConnection};
use tracing::{info, warn};

use super::types::quote;
use crate::error::{on_target as tgt, Result};
use crate::model::{FkAction, ForeignKey, TableModel};

fn action(a: FkAction) -> &'static str {
    match a {
        FkAction::Cascade => "CASCADE",
        FkAction::SetNull => "SET NULL",
        FkAction::None => "NO ACTION",
    }
}

/// The target constraint's name (63 bytes at most).
fn name(fk: &ForeignKey) -> String {
    let mut n = format!("sluice_fk_{}", fk.name);
    while n.len() > 63 {
        n.pop();
    }
    n
}

/// Drops the foreign keys sluice mirrored on `child_target` earlier that are not among
/// `wanted` (now kept off by the column mapping, say: a copy of a key the target's rows no
/// longer keep would refuse them at every commit).
pub async fn drop_unwanted(
    conn: &mut PgConnection,
    child_target: &str,
    wanted: &[ForeignKey],
) -> Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint WHERE contype = 'f' \
         AND conrelid = to_regclass($1) AND conname LIKE 'sluice\\_fk\\_%'",
    )
    .bind(child_target)
    .fetch_all(&mut *conn)
    .await
    .map_err(tgt(format!("reading the foreign keys of {child_target}")))?;
    for n in names
        .iter()
        .filter(|n| !wanted.iter().any(|fk| name(fk) == **n))
    {
        let sql = format!(
            "ALTER TABLE {child_target} DROP CONSTRAINT IF EXISTS {}",
            quote(n)
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(tgt(format!("dropping foreign key {n:?} of {child_target}")))?;
        info!(table = %child_target, constraint = %n, "dropped a foreign key sluice had mirrored, which it no longer mirrors");
    }
    Ok(())
}

/// Adds `fk` (of `child`, to `parent`) on the target unless it is there.
pub async fn mirror(
    conn: &mut PgConnection,
    child_target: &str,
    child: &TableModel,
    parent_target: &str,
    parent: &TableModel,
    fk: &ForeignKey,
) -> Result<()> {
    let parent_key: Vec<&str> = parent
        .primary_key
        .iter()
        .map(|&i| parent.columns[i].name.as_str())
        .collect();
    let mut referenced: Vec<&str> = fk.parent_columns.iter().map(String::as_str).collect();
    let mut sorted_key = parent_key.clone();
    referenced.sort_unstable();
    sorted_key.sort_unstable();
    if referenced != sorted_key {
        warn!(table = %child.name, foreign_key = %fk.name, "this foreign key references columns that are not its parent's primary key: its cascades are not applied on the target");
        return Ok(());
    }
    let constraint = name(fk);
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND conname = $2)",
    )
    .bind(child_target)
    .bind(&constraint)
    .fetch_one(&mut *conn)
    .await
    .map_err(tgt(format!("looking for foreign key {constraint:?}")))?;
    if exists {
        return Ok(());
    }
    let cols: Vec<String> = fk
        .columns
        .iter()
        .map(|&i| quote(&child.columns[i].name))
        .collect();
    let parent_cols: Vec<String> = fk.parent_columns.iter().map(|c| quote(c)).collect();
    let sql = format!(
        "ALTER TABLE {child_target} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {parent_target} ({}) \
         ON DELETE {} ON UPDATE {} DEFERRABLE INITIALLY DEFERRED NOT VALID",
        quote(&constraint),
        cols.join(", "),
        parent_cols.join(", "),
        action(fk.on_delete),
        action(fk.on_update),
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map_err(tgt(format!(
            "adding foreign key {constraint:?} to {child_target}"
        )))?;
    info!(table = %child.name, foreign_key = %fk.name, on_delete = action(fk.on_delete), on_update = action(fk.on_update), "foreign key mirrored on the target, so that its cascades apply there too");
    Ok(())
}
