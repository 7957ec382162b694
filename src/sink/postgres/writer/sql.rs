//! The statements a table's writer runs, built once per table and shape: COPY into the
//! table and the stage, the merge, deletes by key, the in-place key update; and those of an
//! update of some columns only, built for the columns a part changed.

use crate::model::{ColumnSet, TableId, TableModel};
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
    /// `UPDATE … SET <every column> = $i WHERE <key> = $j`: a row whose primary key changed,
    /// updated in place (so that foreign keys `ON UPDATE CASCADE` follow it).
    pub(super) update_key: String,
}

/// `UPDATE … FROM` the stage, setting `sets`, by key.
fn update_from(target: &str, stage: &str, sets: &[String], same_key: &str) -> String {
    // The stage has no statistics: without these settings the planner may merge-join it with
    // a scan of the table's whole index (twice the time, measured).
    format!(
        "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
         UPDATE {target} t SET {} FROM {stage} k WHERE {same_key}; \
         SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT",
        sets.join(", ")
    )
}

/// A table's staging table (temporary, one per connection).
fn stage(id: TableId) -> String {
    format!("pg_temp.sluice_stage_{id}")
}

/// `t.c = k.c AND …` over the primary key's columns.
fn same_key(model: &TableModel) -> String {
    model
        .primary_key
        .iter()
        .map(|&i| {
            let c = quote(&model.columns[i].name);
            format!("t.{c} = k.{c}")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

impl Statements {
    /// For a part of updates that changed only the columns `changed`, when they leave some
    /// column outside the key as it was: the COPY into the stage of the key and the changed
    /// columns, the `UPDATE … FROM` it that sets those, and the columns staged (key first,
    /// then the changed ones, in table order). `None`: every column is written (the updates
    /// changed them all, or none outside the key).
    pub(super) fn update_only(
        id: TableId,
        target: &str,
        model: &TableModel,
        changed: ColumnSet,
    ) -> Option<(String, String, Vec<usize>)> {
        let set: Vec<usize> = (0..model.columns.len())
            .filter(|&i| !model.primary_key.contains(&i) && changed.contains(i))
            .collect();
        let others = model.columns.len() - model.primary_key.len();
        if set.is_empty() || set.len() == others {
            return None;
        }
        let stage = stage(id);
        let cols: Vec<usize> = model
            .primary_key
            .iter()
            .copied()
            .chain(set.iter().copied())
            .collect();
        let names = |idx: &[usize]| -> Vec<String> {
            idx.iter().map(|&i| quote(&model.columns[i].name)).collect()
        };
        let copy = format!("COPY {stage} ({}) FROM STDIN", names(&cols).join(", "));
        let sets: Vec<String> = names(&set)
            .into_iter()
            .map(|q| format!("{q} = k.{q}"))
            .collect();
        let update = update_from(target, &stage, &sets, &same_key(model));
        Some((copy, update, cols))
    }

    pub(super) fn build(id: TableId, target: &str, model: &TableModel) -> Statements {
        let cols: Vec<String> = model.columns.iter().map(|c| quote(&c.name)).collect();
        let col_list = cols.join(", ");
        let pk: Vec<String> = model
            .primary_key
            .iter()
            .map(|&i| quote(&model.columns[i].name))
            .collect();
        let pk_list = pk.join(", ");
        let stage = stage(id);
        let keys = format!("pg_temp.sluice_keys_{}", id);
        let same_key = same_key(model);
        Statements {
            copy_target: format!("COPY {target} ({col_list}) FROM STDIN"),
            copy_stage: format!("COPY {stage} ({col_list}) FROM STDIN"),
            // The stage mirrors the target's columns and types, without their constraints (an
            // update of some columns stages those and the key only, the others NULL); it
            // lives as long as the connection and empties itself at every commit.
            create_stage: format!(
                "CREATE TEMP TABLE IF NOT EXISTS sluice_stage_{} ON COMMIT DELETE ROWS AS SELECT * FROM {target} WITH NO DATA",
                id
            ),
            truncate_stage: format!("TRUNCATE {stage}"),
            merge: format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage} ON CONFLICT ({pk_list}) {}",
                conflict_action(model)
            ),
            update_from: {
                let sets = set_non_key(model, "k");
                (!sets.is_empty()).then(|| update_from(target, &stage, &sets, &same_key))
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
            // The key table empties itself at commit; a second use in this transaction must
            // not see these keys again: it is emptied in the same round trip.
            delete_keys: format!(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
                 DELETE FROM {target} t USING {keys} k WHERE {same_key}; \
                 SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT; \
                 TRUNCATE {keys}"
            ),
            delete_keys_unindexed: format!(
                "DELETE FROM {target} t USING {keys} k WHERE {same_key}; TRUNCATE {keys}"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, Kind};

    fn model(n: usize) -> TableModel {
        TableModel {
            name: "t".into(),
            columns: (0..n)
                .map(|i| Column::new(&format!("c{i}"), "int", Kind::Int { bytes: 4 }))
                .collect(),
            primary_key: vec![1],
            indexes: vec![],
            version: 1,
        }
    }

    fn set(cols: &[usize]) -> ColumnSet {
        let mut s = ColumnSet::NONE;
        cols.iter().for_each(|&i| s.insert(i));
        s
    }

    #[test]
    fn an_update_of_some_columns_stages_the_key_and_those_and_sets_those() {
        let m = model(4);
        let (copy, update, cols) =
            Statements::update_only(7, "\"public\".\"t\"", &m, set(&[1, 3])).unwrap();
        assert_eq!(cols, vec![1, 3]);
        assert_eq!(
            copy,
            "COPY pg_temp.sluice_stage_7 (\"c1\", \"c3\") FROM STDIN"
        );
        assert!(
            update.contains("UPDATE \"public\".\"t\" t SET \"c3\" = k.\"c3\" FROM pg_temp.sluice_stage_7 k WHERE t.\"c1\" = k.\"c1\";"),
            "{update}"
        );
        // Every column outside the key, or none of them: the whole row's statements.
        assert!(Statements::update_only(7, "t", &m, set(&[0, 2, 3])).is_none());
        assert!(Statements::update_only(7, "t", &m, ColumnSet::ALL).is_none());
        assert!(Statements::update_only(7, "t", &m, set(&[1])).is_none());
        assert!(Statements::update_only(7, "t", &m, ColumnSet::NONE).is_none());
    }

    #[test]
    fn columns_from_the_64th_on_count_together() {
        let m = model(70);
        let (_, _, cols) = Statements::update_only(1, "t", &m, set(&[2, 65])).unwrap();
        // Column 65 changed: every column from 63 on is written, as the set cannot tell them
        // apart.
        assert_eq!(cols, [1, 2, 63, 64, 65, 66, 67, 68, 69]);
        assert!(set(&[65]).contains(63) && !set(&[62]).contains(63));
    }
}
