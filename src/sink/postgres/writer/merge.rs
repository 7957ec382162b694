//! Deletes by key, the staging merge with its search for the rows PostgreSQL refuses
//! (halving under savepoints), and dead letters.

use sea_orm::sqlx::{self, AssertSqlSafe, PgConnection};
use tracing::warn;

use super::sql::Statements;
use super::{is_data_error, savepoint, TableWriter};
use crate::config::OnBadRow;
use crate::error::{on_target as tgt, Error, Result, Side};
use crate::model::ColumnSet;
use crate::sink::postgres::copy::{self, copy_rows, BinType, Format};
use crate::state;
use crate::value::Row;

impl TableWriter {
    /// Deletes the rows with these primary keys (values in key order).
    pub(super) async fn delete_keys(
        &mut self,
        tx: &mut PgConnection,
        keys: &[Row],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if !self.keys_ready && !self.keys_created {
            sqlx::raw_sql(AssertSqlSafe(self.sql.create_keys.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(tgt(format!(
                    "creating the key table for {:?}",
                    self.model.name
                )))?;
            self.keys_created = true;
        }
        let format = copy::choose(self.key_types(), keys, None);
        copy_rows(tx, &self.sql.copy_keys, format, keys, None, buf)
            .await
            .map_err(tgt(format!(
                "copying deleted keys of {:?}",
                self.model.name
            )))?;
        let delete = if self.deferred_key.is_some() {
            &self.sql.delete_keys_unindexed
        } else {
            &self.sql.delete_keys
        };
        sqlx::raw_sql(AssertSqlSafe(delete.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(tgt(format!("deleting rows of {:?}", self.model.name)))?;
        Ok(())
    }

    /// Copies `rows` into the stage and merges them into the table. Rows PostgreSQL refuses
    /// are found by halving the failing part under savepoints; each then stops the table
    /// (`on_bad_row = "stop"`) or becomes a dead letter. Returns the dead letters.
    /// `updates`: the rows come from updates only, which changed these columns, so they are
    /// most likely all in the table: an `UPDATE … FROM` the stage, then an insert of any it
    /// lacked, which costs PostgreSQL less than the upsert (no row lock taken and logged
    /// before each update). When the updates left some columns as they were, only the key
    /// and the changed columns are staged and set (see [`Statements::update_only`]); the rows
    /// the table lacked are then staged again whole, to be inserted.
    pub(super) async fn merge_isolating(
        &mut self,
        tx: &mut PgConnection,
        rows: &[&Row],
        updates: Option<ColumnSet>,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        if !self.stage_ready && !self.stage_created {
            sqlx::raw_sql(AssertSqlSafe(self.sql.create_stage.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(tgt(format!(
                    "creating the staging table for {:?}",
                    self.model.name
                )))?;
            self.stage_created = true;
        }
        let merge = if self.deferred_key.is_some() {
            self.sql.insert_stage.clone()
        } else {
            self.sql.merge.clone()
        };
        let update_from = match updates {
            Some(changed) if self.deferred_key.is_none() => self.update_plan(changed),
            _ => None,
        };
        let name = self.model.name.clone();
        let mut dead = 0;
        let mut parts = vec![(0, rows.len())];
        while let Some((lo, hi)) = parts.pop() {
            if lo == hi {
                continue;
            }
            // One round trip each: the savepoint with the stage emptied, the merge with the
            // savepoint released (a statement that fails ends its query string there).
            if self.stage_used {
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SAVEPOINT sluice_part; {}",
                    self.sql.truncate_stage
                )))
                .execute(&mut *tx)
                .await
                .map_err(tgt("emptying the staging table"))?;
            } else {
                savepoint(tx, "SAVEPOINT sluice_part").await?;
            }
            self.stage_used = true;
            let slice = &rows[lo..hi];
            let res = match &update_from {
                Some(plan) => self
                    .update_in_place(tx, slice, plan, buf)
                    .await
                    .map(|()| true),
                None => {
                    let format: Format =
                        copy::choose(self.row_types(), slice.iter().copied(), None);
                    match copy_rows(tx, &self.sql.copy_stage, format, slice, None, buf).await {
                        Ok(_) => sqlx::raw_sql(AssertSqlSafe(format!(
                            "{merge}; RELEASE SAVEPOINT sluice_part"
                        )))
                        .execute(&mut *tx)
                        .await
                        .map(|_| false),
                        Err(e) => Err(e),
                    }
                }
            };
            match res {
                Ok(true) => savepoint(tx, "RELEASE SAVEPOINT sluice_part").await?,
                Ok(false) => {}
                Err(e) if is_data_error(&e) => {
                    savepoint(tx, "ROLLBACK TO SAVEPOINT sluice_part").await?;
                    if hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        parts.push((mid, hi));
                        parts.push((lo, mid));
                        continue;
                    }
                    let row = rows[lo];
                    let key = self.model.describe_key(row);
                    let reason = Error::db(Side::Target, "writing the row", &e).to_string();
                    match self.on_bad_row {
                        OnBadRow::Stop => {
                            return Err(Error::BadRow {
                                table: name,
                                key,
                                reason,
                            });
                        }
                        OnBadRow::DeadLetter => {
                            warn!(table = %name, key = %key, error = %reason, "row refused by PostgreSQL; written to sluice.dead_letters");
                            self.dead_letter(tx, row, &reason).await?;
                            dead += 1;
                        }
                    }
                }
                Err(e) => {
                    return Err(Error::db(
                        Side::Target,
                        format!("merging a batch into {name:?}"),
                        &e,
                    ))
                }
            }
        }
        Ok(dead)
    }

    /// How a part of updates that changed the columns `changed` is staged and applied;
    /// `None` for a table whose columns are all in its key (nothing to update).
    fn update_plan(&self, changed: ColumnSet) -> Option<UpdatePlan> {
        if let Some((copy, update, cols)) =
            Statements::update_only(self.id, &self.target, &self.model, changed)
        {
            let types = self
                .row_types()
                .map(|all| cols.iter().map(|&i| all[i]).collect());
            return Some(UpdatePlan {
                copy,
                update,
                cols: Some(cols),
                types,
            });
        }
        Some(UpdatePlan {
            copy: self.sql.copy_stage.clone(),
            update: self.sql.update_from.clone()?,
            cols: None,
            types: self.row_types().map(<[BinType]>::to_vec),
        })
    }

    /// Stages `rows` as `plan` says and updates the table's rows of the same keys from them;
    /// inserts those the table lacked, staged again whole when the plan left columns out.
    async fn update_in_place(
        &self,
        tx: &mut PgConnection,
        rows: &[&Row],
        plan: &UpdatePlan,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<(), sqlx::Error> {
        let cols = plan.cols.as_deref();
        let format: Format = copy::choose(plan.types.as_deref(), rows.iter().copied(), cols);
        copy_rows(tx, &plan.copy, format, rows, cols, buf).await?;
        let done = sqlx::raw_sql(AssertSqlSafe(plan.update.as_str()))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() >= rows.len() as u64 {
            return Ok(());
        }
        if cols.is_some() {
            sqlx::raw_sql(AssertSqlSafe(self.sql.truncate_stage.as_str()))
                .execute(&mut *tx)
                .await?;
            let format: Format = copy::choose(self.row_types(), rows.iter().copied(), None);
            copy_rows(tx, &self.sql.copy_stage, format, rows, None, buf).await?;
        }
        sqlx::raw_sql(AssertSqlSafe(self.sql.insert_missing.as_str()))
            .execute(&mut *tx)
            .await
            .map(|_| ())
    }

    /// Records a refused row (as JSON: column name → typed value) with its error, in the
    /// batch's transaction.
    pub(super) async fn dead_letter(
        &self,
        tx: &mut PgConnection,
        row: &Row,
        reason: &str,
    ) -> Result<()> {
        let t = &self.model;
        let as_json = |idx: &mut dyn Iterator<Item = usize>| {
            let map: serde_json::Map<String, serde_json::Value> = idx
                .map(|i| {
                    (
                        t.columns[i].name.clone(),
                        serde_json::to_value(&row[i]).expect("values serialise"),
                    )
                })
                .collect();
            // `json`, not `jsonb`: it keeps `\u0000` escapes, which may be why the row failed.
            serde_json::Value::Object(map).to_string()
        };
        let key = as_json(&mut t.primary_key.iter().copied());
        let full = as_json(&mut (0..row.len()));
        state::dead_letter(tx, &self.key, &key, &full, reason).await
    }
}

/// The statements and staged columns of an update in place (see
/// [`TableWriter::merge_isolating`]).
struct UpdatePlan {
    /// The COPY into the stage.
    copy: String,
    /// The `UPDATE … FROM` the stage.
    update: String,
    /// The columns staged; `None`: all.
    cols: Option<Vec<usize>>,
    /// Their COPY binary types, when the table has them.
    types: Option<Vec<BinType>>,
}
