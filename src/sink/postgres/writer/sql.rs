//! The statements a table's writer runs, built once per table and shape: COPY into the
//! table and the stage, the merge, deletes by key, the in-place key update.

use crate::model::{TableId, TableModel};
use crate::sink::postgres::ddl::{conflict_action, set_non_key};
use crate::sink::postgres::types::{pg_type, quote};

/// The statements of one table, built once.
pub(super) struct Statements {
    pub(super) copy_target: String,
    pub(super) copy_stage: String,
    pub(super) create_stage: String,
    pub(super) truncate_stage: String,
    /// `INSERT … SELECT … ON CONFLICT (pk) DO UPDATE`.
    pub(super) merge: String,
    /// `UPDATE … FROM` the stage, by key (one index lookup per staged row), for a part of
    /// updates only; `None` for a table whose columns are all in its key.
    pub(super) update_from: Option<String>,
    /// `INSERT … SELECT` the staged rows whose key the table lacks (after `update_from`).
    pub(super) insert_missing: String,
    /// `INSERT … SELECT`, without `ON CONFLICT` (no key to conflict on).
    pub(super) insert_stage: String,
    pub(super) create_keys: String,
    pub(super) copy_keys: String,
    pub(super) delete_keys: String,
    pub(super) delete_keys_unindexed: String,
    pub(super) truncate_keys: String,
    /// `UPDATE … SET <every column> = $i WHERE <key> = $j`: a row whose primary key changed,
    /// updated in place (so that foreign keys `ON UPDATE CASCADE` follow it).
    pub(super) update_key: String,
}

impl Statements {
    pub(super) fn build(id: TableId, target: &str, model: &TableModel) -> Statements {
        let cols: Vec<String> = model.columns.iter().map(|c| quote(&c.name)).collect();
        let col_list = cols.join(", ");
        let pk: Vec<String> = model
            .primary_key
            .iter()
            .map(|&i| quote(&model.columns[i].name))
            .collect();
        let pk_list = pk.join(", ");
        let stage = format!("pg_temp.sluice_stage_{}", id);
        let keys = format!("pg_temp.sluice_keys_{}", id);
        let same_key = pk
            .iter()
            .map(|c| format!("t.{c} = k.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        Statements {
            copy_target: format!("COPY {target} ({col_list}) FROM STDIN"),
            copy_stage: format!("COPY {stage} ({col_list}) FROM STDIN"),
            // The stage mirrors the target's columns and types; it lives as long as the
            // connection and empties itself at every commit.
            create_stage: format!(
                "CREATE TEMP TABLE IF NOT EXISTS sluice_stage_{} (LIKE {target}) ON COMMIT DELETE ROWS",
                id
            ),
            truncate_stage: format!("TRUNCATE {stage}"),
            merge: format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage} ON CONFLICT ({pk_list}) {}",
                conflict_action(model)
            ),
            // The stage has no statistics: without these settings the planner may merge-join
            // it with a scan of the table's whole index (twice the time, measured).
            update_from: {
                let sets = set_non_key(model, "k");
                (!sets.is_empty()).then(|| {
                    format!(
                        "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
                         UPDATE {target} t SET {} FROM {stage} k WHERE {same_key}; \
                         SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT",
                        sets.join(", ")
                    )
                })
            },
            insert_missing: format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage} k \
                 WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {same_key})"
            ),
            insert_stage: format!("INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage}"),
            create_keys: format!(
                "CREATE TEMP TABLE IF NOT EXISTS sluice_keys_{} ON COMMIT DELETE ROWS AS SELECT {pk_list} FROM {target} WITH NO DATA",
                id
            ),
            copy_keys: format!("COPY {keys} ({pk_list}) FROM STDIN"),
            // The key table's statistics are never gathered: left to itself, the planner
            // takes it for thousands of rows and hash-joins it with a scan of the whole
            // target (a second on a large table, for a handful of keys). With the primary
            // key's index, one lookup per key; without it (a deferred key), the hash join.
            delete_keys: format!(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
                 DELETE FROM {target} t USING {keys} k WHERE {same_key}; \
                 SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT"
            ),
            delete_keys_unindexed: format!("DELETE FROM {target} t USING {keys} k WHERE {same_key}"),
            truncate_keys: format!("TRUNCATE {keys}"),
            update_key: {
                let n = model.columns.len();
                let sets: Vec<String> = model
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} = ${}::{}", quote(&c.name), i + 1, pg_type(c)))
                    .collect();
                let wheres: Vec<String> = model
                    .primary_key
                    .iter()
                    .enumerate()
                    .map(|(j, &i)| {
                        let c = &model.columns[i];
                        format!("{} = ${}::{}", quote(&c.name), n + j + 1, pg_type(c))
                    })
                    .collect();
                format!(
                    "UPDATE {target} SET {} WHERE {}",
                    sets.join(", "),
                    wheres.join(" AND ")
                )
            },
        }
    }
}
