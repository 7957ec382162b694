//! One table's part of a batch, applied inside the batch's transaction.
//!
//! - **Inserts and upserts only** (polling, and most of a binlog): a plain COPY straight into
//!   the table, rows sorted by primary key (PostgreSQL inserts into the key's index far
//!   faster in key order). If a row already exists (an updated row coming round again), the
//!   COPY is rolled back to a savepoint and the part goes through the merge instead, and so
//!   do the next [`DIRECT_COOLDOWN_BATCHES`] parts.
//! - **Merge:** the rows, only the last version of each key, are copied into a temporary
//!   stage and merged with `INSERT … SELECT … ON CONFLICT (pk) DO UPDATE`. A row PostgreSQL
//!   refuses is found by halving the failing rows under savepoints, so it costs O(log n)
//!   statements and every good row is still applied; it then stops the table or becomes a
//!   dead letter (`on_bad_row`).
//! - **Deletes** (and updates that changed the key, whose old key is deleted): the changes
//!   are first reduced to each key's final state; the keys that end deleted are copied into
//!   a temporary table and deleted with one `DELETE … USING`, then the rest is merged.
//! - **While the key is deferred** (initial load): there is no key to conflict on, so rows
//!   are plain COPYs; a part with deletes or key changes first deletes every copy of each
//!   key it touches.

use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::sqlx::{self, AssertSqlSafe, PgConnection};
use tracing::{info, warn};

use super::copy::{self, copy_rows, BinType, Format};
use super::ddl::conflict_action;
use super::lock::{self, LockWait};
use super::reshape;
use super::types::{pg_type, qualified, quote};
use super::{SinkOptions, SinkTable};
use crate::config::{CopyFormat, OnBadRow, OnDropColumn};
use crate::error::{on_target as tgt, Error, Result, Side};
use crate::model::{Change, ChangeSet, Op, TableId, TableModel};
use crate::sink::PartApplied;
use crate::state::{self, StateKey};
use crate::value::{Row, Value};

/// SQLSTATE of a unique violation: the direct COPY met a row that already exists.
const UNIQUE_VIOLATION: &str = "23505";
/// After a direct COPY met an existing row, this many parts go straight to the merge.
const DIRECT_COOLDOWN_BATCHES: u32 = 16;

/// The statements of one table, built once.
struct Statements {
    copy_target: String,
    copy_stage: String,
    create_stage: String,
    truncate_stage: String,
    /// `INSERT … SELECT … ON CONFLICT (pk) DO UPDATE`.
    merge: String,
    /// `INSERT … SELECT`, without `ON CONFLICT` (no key to conflict on).
    insert_stage: String,
    create_keys: String,
    copy_keys: String,
    delete_keys: String,
    truncate_keys: String,
    /// `UPDATE … SET <every column> = $i WHERE <key> = $j`: a row whose primary key changed,
    /// updated in place (so that foreign keys `ON UPDATE CASCADE` follow it).
    update_key: String,
}

/// Writes one table.
pub(super) struct TableWriter {
    key: StateKey,
    id: TableId,
    /// The shape rows are written in: `committed`, or a newer one a schema change in the
    /// transaction under way brought.
    model: Arc<TableModel>,
    committed_model: Arc<TableModel>,
    schema: String,
    on_drop: OnDropColumn,
    indexes: Option<bool>,
    epoch: i64,
    /// The constraint an initial load dropped, while it is not built again.
    pub(super) deferred_key: Option<String>,
    version_columns: Vec<usize>,
    target: String,
    sql: Statements,
    /// Which temporary tables exist on the current connection.
    stage_ready: bool,
    keys_ready: bool,
    /// ... created in the transaction under way (they exist once it commits).
    stage_created: bool,
    keys_created: bool,
    /// The stage holds rows from earlier in the transaction under way.
    stage_used: bool,
    /// Parts left before a direct COPY is tried again after one met an existing row.
    cooldown: u32,
    on_bad_row: OnBadRow,
    copy_format: CopyFormat,
    /// COPY binary column types (all columns, then the key's), when every column has one;
    /// learnt from the target before the first write.
    binary: Option<(Vec<BinType>, Vec<BinType>)>,
    format_known: bool,
    lock_wait: LockWait,
    /// The target's URL, for recording in `status` what DDL waits for.
    url: String,
    /// The process's helper connections, that recording goes through.
    helpers: crate::conn::SharedHelpers,
}

impl TableWriter {
    /// Runs a DDL statement on the table in `tx` without making its readers wait (see
    /// [`lock`](super::lock)), retrying until its lock is granted; after `[target]
    /// ddl_wait_ms`, `status` says what it waits for (cleared by the next commit).
    pub(super) async fn ddl(&self, tx: &mut PgConnection, sql: &str, what: &str) -> Result<()> {
        let since = chrono::Utc::now();
        let mut said = false;
        loop {
            match lock::ddl(tx, &self.target, sql, what, self.lock_wait).await? {
                lock::Ddl::Done => return Ok(()),
                lock::Ddl::Waited(holders) if !said => {
                    said = true;
                    let who: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
                    let message = format!(
                        "waiting since {} for a lock on {} ({what}), held by {}; retried with a {} ms lock timeout so its readers are not blocked: end those sessions, or wait",
                        since.format("%Y-%m-%d %H:%M:%S UTC"),
                        self.target,
                        if who.is_empty() { "sessions that have since let go".to_string() } else { who.join("; ") },
                        self.lock_wait.lock_timeout.as_millis()
                    );
                    warn!(table = %self.model.name, "{message}");
                    let mut helpers = self.helpers.lock().await;
                    let recorded = match helpers.target(&self.url).await {
                        Ok(conn) => {
                            crate::state::record_error(conn, &self.key, self.epoch, &message).await
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = recorded {
                        warn!(error = %e, "could not record the wait in sluice.replication_state");
                    }
                }
                lock::Ddl::Waited(_) => {}
            }
        }
    }

    pub fn new(opts: &SinkOptions, key: StateKey, t: SinkTable) -> Self {
        let model = t.model;
        let target = qualified(&opts.schema, &model.name);
        let sql = Statements::build(t.id, &target, &model);
        TableWriter {
            key,
            id: t.id,
            committed_model: model.clone(),
            model,
            schema: opts.schema.clone(),
            on_drop: t.on_drop_column,
            indexes: opts.indexes,
            epoch: t.epoch,
            deferred_key: t.deferred_key,
            version_columns: t.version_columns,
            target,
            sql,
            stage_ready: false,
            keys_ready: false,
            stage_created: false,
            keys_created: false,
            stage_used: false,
            cooldown: 0,
            on_bad_row: opts.on_bad_row,
            copy_format: opts.copy_format,
            binary: None,
            format_known: false,
            lock_wait: opts.lock_wait,
            url: opts.url.clone(),
            helpers: opts.helpers.clone(),
        }
    }
}

impl Statements {
    fn build(id: TableId, target: &str, model: &TableModel) -> Statements {
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
            insert_stage: format!("INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage}"),
            create_keys: format!(
                "CREATE TEMP TABLE IF NOT EXISTS sluice_keys_{} ON COMMIT DELETE ROWS AS SELECT {pk_list} FROM {target} WITH NO DATA",
                id
            ),
            copy_keys: format!("COPY {keys} ({pk_list}) FROM STDIN"),
            delete_keys: format!("DELETE FROM {target} t USING {keys} k WHERE {same_key}"),
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

impl TableWriter {
    pub fn key(&self) -> &StateKey {
        &self.key
    }

    pub fn model(&self) -> &TableModel {
        &self.model
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn version_columns(&self) -> &[usize] {
        &self.version_columns
    }

    /// A new connection: its temporary tables are gone, and so is what an uncommitted
    /// transaction did (a schema change among it).
    pub fn reconnected(&mut self) {
        if !Arc::ptr_eq(&self.model, &self.committed_model) {
            self.model = self.committed_model.clone();
            self.sql = Statements::build(self.id, &self.target, &self.model);
            self.format_known = false;
        }
        self.stage_ready = false;
        self.keys_ready = false;
        self.stage_created = false;
        self.keys_created = false;
        self.stage_used = false;
    }

    /// The batch committed: temporary tables created in it now exist.
    pub fn committed(&mut self) {
        self.committed_model = self.model.clone();
        self.stage_ready |= self.stage_created;
        self.keys_ready |= self.keys_created;
        self.stage_created = false;
        self.keys_created = false;
        self.stage_used = false;
    }

    /// Before the batch's transaction: reads the target columns' types once and decides
    /// between COPY binary and text.
    pub async fn prepare(&mut self, conn: &mut PgConnection) -> Result<()> {
        self.stage_created = false;
        self.keys_created = false;
        self.stage_used = false;
        if self.format_known {
            return Ok(());
        }
        self.learn_format(conn).await
    }

    /// Reads the target columns' types (by name: a column added later sits at the end of
    /// the target table, wherever it is on the source) and decides between COPY binary and
    /// text.
    async fn learn_format(&mut self, conn: &mut PgConnection) -> Result<()> {
        let types: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(&self.target)
        .fetch_all(&mut *conn)
        .await
        .map_err(tgt(format!("reading the column types of {}", self.target)))?;
        let all: Option<Vec<BinType>> = match self.copy_format {
            CopyFormat::Auto => self
                .model
                .columns
                .iter()
                .map(|c| {
                    types
                        .iter()
                        .find(|(n, _)| *n == c.name)
                        .and_then(|(_, t)| BinType::of(t))
                })
                .collect(),
            _ => None,
        };
        self.binary = all.map(|all| {
            let key = self.model.primary_key.iter().map(|&i| all[i]).collect();
            (all, key)
        });
        self.format_known = true;
        tracing::debug!(
            table = %self.model.name,
            format = if self.binary.is_some() { "binary" } else { "text" },
            "COPY format chosen"
        );
        Ok(())
    }

    /// The source table changed shape: brings the target table to `new` in `tx` (see
    /// [`reshape`](super::reshape)), records it in `sluice.schema_history`, and writes in
    /// the new shape from here on.
    async fn reshape(
        &mut self,
        tx: &mut PgConnection,
        new: &Arc<TableModel>,
        position: &crate::model::Position,
        loading: bool,
    ) -> Result<()> {
        // The shape recorded last is the one the target is in (the source's idea of the old
        // shape may be older: a lane that restarted starts from the shape at start-up).
        let recorded = crate::state::latest_shape(tx, &self.key).await?;
        let old = recorded.as_ref().unwrap_or(&self.committed_model);
        let have = reshape::target_columns(tx, &self.schema, &new.name).await?;
        let r = reshape::plan(&self.target, &have, Some(old), new, self.on_drop)?;
        for note in &r.notes {
            warn!(table = %new.name, "{note}");
        }
        let mut ran = r.statements.clone();
        for sql in &r.statements {
            self.ddl(tx, sql, "a schema change").await?;
        }
        // Indexes wait for the end of an initial load (then built at once).
        if let (Some(unique), false) = (self.indexes, loading || self.deferred_key.is_some()) {
            ran.extend(reshape::sync_indexes(tx, &self.schema, new, unique, self.lock_wait).await?);
        }
        let version =
            crate::state::next_version(recorded.as_ref(), new, !ran.is_empty(), new.version);
        let new = if recorded.is_some() {
            let mut m = (**new).clone();
            m.version = version;
            Arc::new(m)
        } else {
            new.clone()
        };
        if recorded.as_ref().is_none_or(|r| r.version != version) {
            crate::state::record_shape(tx, &self.key, &new, Some(position), &ran).await?;
        }
        let new = &new;
        // The temporary tables mirror the old columns.
        let drop = format!(
            "DROP TABLE IF EXISTS pg_temp.sluice_stage_{0}; DROP TABLE IF EXISTS pg_temp.sluice_keys_{0}",
            self.id
        );
        sqlx::raw_sql(AssertSqlSafe(drop))
            .execute(&mut *tx)
            .await
            .map_err(tgt("dropping the staging tables of the old shape"))?;
        self.stage_ready = false;
        self.keys_ready = false;
        self.stage_created = false;
        self.keys_created = false;
        self.stage_used = false;
        self.model = new.clone();
        self.sql = Statements::build(self.id, &self.target, &self.model);
        self.learn_format(tx).await?;
        info!(
            table = %new.name,
            version = new.version,
            statements = ?ran,
            "the source table changed shape; the target follows"
        );
        Ok(())
    }

    fn row_types(&self) -> Option<&[BinType]> {
        self.binary.as_ref().map(|(all, _)| all.as_slice())
    }

    fn key_types(&self) -> Option<&[BinType]> {
        self.binary.as_ref().map(|(_, key)| key.as_slice())
    }

    /// Applies one table's changes in `tx` (its position is the caller's to store).
    pub async fn apply(
        &mut self,
        tx: &mut PgConnection,
        part: &ChangeSet,
        buf: &mut Vec<u8>,
        loading: bool,
    ) -> Result<PartApplied> {
        if let Some(shape) = &part.shape {
            self.reshape(tx, shape, &part.position, loading).await?;
        }
        // A TRUNCATE makes every change before it moot: truncate, then apply the rest.
        let changes = match part.changes.iter().rposition(|c| c.op == Op::Truncate) {
            Some(i) => {
                let sql = format!("TRUNCATE {}", self.target);
                self.ddl(tx, &sql, "TRUNCATE").await?;
                &part.changes[i + 1..]
            }
            None => &part.changes[..],
        };
        let plain = changes.iter().all(|c| {
            matches!(c.op, Op::Insert | Op::Upsert) || (c.op == Op::Update && c.old_key.is_none())
        });
        let renames = self.deferred_key.is_none() && changes.iter().any(|c| self.renames(c));
        let (merged, dead) = if changes.is_empty() {
            (false, 0)
        } else if plain {
            self.apply_plain(tx, changes, buf).await?
        } else if renames {
            self.apply_in_order(tx, changes, buf).await?
        } else {
            self.apply_merged(tx, changes, buf).await?
        };
        Ok(PartApplied {
            table: part.table,
            rows: part.changes.len() - dead,
            merged,
            dead_lettered: dead,
        })
    }

    /// Inserts and upserts: a direct COPY when it can, the merge otherwise. Returns whether
    /// it merged, and the dead letters.
    async fn apply_plain(
        &mut self,
        tx: &mut PgConnection,
        changes: &[Change],
        buf: &mut Vec<u8>,
    ) -> Result<(bool, usize)> {
        let try_direct = self.deferred_key.is_some() || self.cooldown == 0;
        if !try_direct {
            self.cooldown -= 1;
        }
        if try_direct {
            // Without the key there is no index to keep: the order does not matter.
            let rows: Vec<&Row> = if self.deferred_key.is_some() {
                changes.iter().map(|c| &c.row).collect()
            } else {
                sorted_by_key(&self.model, changes)
            };
            let format = copy::choose(self.row_types(), rows.iter().copied(), None);
            savepoint(tx, "SAVEPOINT sluice_direct").await?;
            match copy_rows(tx, &self.sql.copy_target, format, &rows, None, buf).await {
                Ok(_) => {
                    savepoint(tx, "RELEASE SAVEPOINT sluice_direct").await?;
                    return Ok((false, 0));
                }
                Err(e)
                    if self.deferred_key.is_none()
                        && sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) =>
                {
                    savepoint(tx, "ROLLBACK TO SAVEPOINT sluice_direct").await?;
                    self.cooldown = DIRECT_COOLDOWN_BATCHES;
                }
                // A value PostgreSQL refuses: find it (and apply the rest) through the merge.
                Err(e) if is_data_error(&e) => {
                    savepoint(tx, "ROLLBACK TO SAVEPOINT sluice_direct").await?;
                }
                Err(e) => {
                    return Err(Error::db(
                        Side::Target,
                        format!("copying {} rows into {:?}", changes.len(), self.model.name),
                        &e,
                    ))
                }
            }
        }
        self.apply_merged(tx, changes, buf).await
    }

    /// Whether a change moves a row to another primary key.
    fn renames(&self, c: &Change) -> bool {
        c.old_key
            .as_ref()
            .is_some_and(|old| old.as_ref() != self.model.key_of(&c.row).as_slice())
    }

    /// Changes that move rows to other keys, each applied in its place as an `UPDATE` of the
    /// key (foreign keys `ON UPDATE CASCADE` then follow on the target as on the source); the
    /// changes between them go through the merge.
    async fn apply_in_order(
        &mut self,
        tx: &mut PgConnection,
        changes: &[Change],
        buf: &mut Vec<u8>,
    ) -> Result<(bool, usize)> {
        let mut dead = 0;
        let mut start = 0;
        for (i, c) in changes.iter().enumerate() {
            if !self.renames(c) {
                continue;
            }
            if start < i {
                dead += self.apply_merged(tx, &changes[start..i], buf).await?.1;
            }
            start = i + 1;
            let old = c.old_key.as_ref().expect("a rename has its old key");
            let mut q = sqlx::query(AssertSqlSafe(self.sql.update_key.as_str()));
            for v in c.row.iter().chain(old.iter()) {
                q = q.bind(copy::param_text(v));
            }
            savepoint(tx, "SAVEPOINT sluice_rename").await?;
            match q.execute(&mut *tx).await {
                Ok(r) => {
                    savepoint(tx, "RELEASE SAVEPOINT sluice_rename").await?;
                    if r.rows_affected() == 1 {
                        continue;
                    }
                    // The old row is not there (the change came again after a crash): the
                    // new one is written as is.
                }
                // The new key exists already (idem): the old row goes, the new one is written.
                Err(e) if is_data_error(&e) => {
                    savepoint(tx, "ROLLBACK TO SAVEPOINT sluice_rename").await?;
                }
                Err(e) => {
                    return Err(Error::db(
                        Side::Target,
                        format!("moving a row of {:?} to its new key", self.model.name),
                        &e,
                    ))
                }
            }
            dead += self.apply_merged(tx, std::slice::from_ref(c), buf).await?.1;
        }
        if start < changes.len() {
            dead += self.apply_merged(tx, &changes[start..], buf).await?.1;
        }
        Ok((true, dead))
    }

    /// Through the merge: each key's final state, deletes first.
    async fn apply_merged(
        &mut self,
        tx: &mut PgConnection,
        changes: &[Change],
        buf: &mut Vec<u8>,
    ) -> Result<(bool, usize)> {
        let primary_key = self.model.primary_key.clone();
        let last = final_states(&primary_key, changes);
        let deferred = self.deferred_key.is_some();
        // Keyed: delete the keys that end deleted (the rest is upserted). Deferred: delete
        // every copy of every key touched, then insert the survivors.
        let doomed: Vec<Row> = last
            .iter()
            .filter(|(_, r)| deferred || r.is_none())
            .map(|(k, _)| k.to_row())
            .collect();
        let rows: Vec<&Row> = last.iter().filter_map(|(_, r)| *r).collect();
        if !doomed.is_empty() {
            self.delete_keys(tx, &doomed, buf).await?;
        }
        let dead = self.merge_isolating(tx, &rows, buf).await?;
        Ok((true, dead))
    }

    /// Deletes the rows with these primary keys (values in key order).
    async fn delete_keys(
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
        sqlx::raw_sql(AssertSqlSafe(self.sql.delete_keys.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(tgt(format!("deleting rows of {:?}", self.model.name)))?;
        // The key table empties itself at commit; a second use in this transaction must not
        // see these keys again.
        sqlx::raw_sql(AssertSqlSafe(self.sql.truncate_keys.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(tgt("emptying the key table"))?;
        Ok(())
    }

    /// Copies `rows` into the stage and merges them into the table. Rows PostgreSQL refuses
    /// are found by halving the failing part under savepoints; each then stops the table
    /// (`on_bad_row = "stop"`) or becomes a dead letter. Returns the dead letters.
    async fn merge_isolating(
        &mut self,
        tx: &mut PgConnection,
        rows: &[&Row],
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
        let name = self.model.name.clone();
        let mut dead = 0;
        let mut parts = vec![(0, rows.len())];
        while let Some((lo, hi)) = parts.pop() {
            if lo == hi {
                continue;
            }
            savepoint(tx, "SAVEPOINT sluice_part").await?;
            if self.stage_used {
                sqlx::raw_sql(AssertSqlSafe(self.sql.truncate_stage.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map_err(tgt("emptying the staging table"))?;
            }
            self.stage_used = true;
            let slice = &rows[lo..hi];
            let format: Format = copy::choose(self.row_types(), slice.iter().copied(), None);
            let res = match copy_rows(tx, &self.sql.copy_stage, format, slice, None, buf).await {
                Ok(_) => sqlx::raw_sql(AssertSqlSafe(merge.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => savepoint(tx, "RELEASE SAVEPOINT sluice_part").await?,
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

    /// Records a refused row (as JSON: column name → typed value) with its error, in the
    /// batch's transaction.
    async fn dead_letter(&self, tx: &mut PgConnection, row: &Row, reason: &str) -> Result<()> {
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

/// Runs a SAVEPOINT / RELEASE / ROLLBACK TO statement.
async fn savepoint(tx: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *tx)
        .await
        .map_err(tgt(sql))?;
    Ok(())
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A value the target refuses: a data exception (class 22) or an integrity violation (23).
fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

/// The rows of a part in primary-key order. Order inside a batch does not matter for
/// correctness (it commits as a whole), but PostgreSQL inserts into the primary-key index
/// far faster in key order than in cursor order, where keys (random UUIDs, say) are spread
/// over the whole index.
fn sorted_by_key<'a>(t: &TableModel, changes: &'a [Change]) -> Vec<&'a Row> {
    let mut keyed: Vec<(Vec<u8>, &Row)> = changes
        .iter()
        .map(|c| {
            let mut k = Vec::new();
            for &i in &t.primary_key {
                copy::write_text(&c.row[i], &mut k);
                k.push(0);
            }
            (k, &c.row)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// A primary key inside a part, borrowed: the key columns of a row, or an update's old key.
#[derive(Clone, Copy)]
struct Key<'a> {
    values: &'a [Value],
    /// The key columns' places in `values`; `None`: `values` is the key itself.
    cols: Option<&'a [usize]>,
}

impl<'a> Key<'a> {
    fn of(primary_key: &'a [usize], row: &'a Row) -> Self {
        Key {
            values: row,
            cols: Some(primary_key),
        }
    }

    fn old(key: &'a [Value]) -> Self {
        Key {
            values: key,
            cols: None,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Value> + '_ {
        let n = self.cols.map_or(self.values.len(), <[usize]>::len);
        (0..n).map(move |i| &self.values[self.cols.map_or(i, |c| c[i])])
    }

    fn to_row(self) -> Row {
        self.iter().cloned().collect()
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

// Key values come from primary keys, which hold no NaN.
impl Eq for Key<'_> {}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for v in self.iter() {
            std::mem::discriminant(v).hash(h);
            match v {
                Value::Null => {}
                Value::Bool(b) => b.hash(h),
                Value::Int(i) => i.hash(h),
                Value::UInt(u) => u.hash(h),
                Value::Float(f) => f.to_bits().hash(h),
                Value::Text(s) => s.hash(h),
                Value::Bytes(b) => b.hash(h),
                Value::Date(d) => d.hash(h),
                Value::DateTime(d) => d.hash(h),
                Value::Timestamp(d) => d.hash(h),
            }
        }
    }
}

/// Each key's final state after the changes, in order: the row it ends with, or `None`
/// when it ends deleted. Keys are borrowed from the changes: a batch's keys are never
/// copied (a batch of updates would otherwise take twice its memory here).
/// `primary_key`: the key columns' places in a row.
fn final_states<'a>(
    primary_key: &'a [usize],
    changes: &'a [Change],
) -> Vec<(Key<'a>, Option<&'a Row>)> {
    let mut index: HashMap<Key<'a>, usize> = HashMap::with_capacity(changes.len());
    let mut out: Vec<(Key<'a>, Option<&'a Row>)> = Vec::with_capacity(changes.len());
    let mut set = |key: Key<'a>, state: Option<&'a Row>| match index.get(&key) {
        Some(&i) => out[i].1 = state,
        None => {
            index.insert(key, out.len());
            out.push((key, state));
        }
    };
    for c in changes {
        match c.op {
            // Handled before: a part's changes start after its last TRUNCATE.
            Op::Truncate => {}
            Op::Delete => set(Key::of(primary_key, &c.row), None),
            Op::Insert | Op::Upsert | Op::Update => {
                let key = Key::of(primary_key, &c.row);
                if let Some(old) = &c.old_key {
                    let old = Key::old(old);
                    if old != key {
                        set(old, None);
                    }
                }
                set(key, Some(&c.row));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, Kind};

    fn model() -> TableModel {
        let col = |n: &str| Column {
            name: n.into(),
            source_type: "int".into(),
            kind: Kind::Int { bytes: 4 },
            nullable: false,
            null_on_zero_date: false,
            default: None,
            renamed_from: None,
        };
        TableModel {
            name: "t".into(),
            columns: vec![col("id"), col("v")],
            primary_key: vec![0],
            indexes: vec![],
            version: 1,
        }
    }

    fn row(id: i64, v: i64) -> Row {
        vec![Value::Int(id), Value::Int(v)]
    }

    #[test]
    fn the_last_change_of_each_key_wins() {
        let t = model();
        let changes = vec![
            Change::insert(row(1, 1)),
            Change::insert(row(2, 1)),
            Change::update(row(1, 2), None),
            Change::delete(row(2, 0)),
            // Key 3 becomes key 4.
            Change::insert(row(3, 1)),
            Change::update(row(4, 1), Some(vec![Value::Int(3)])),
            // Deleted, then inserted again.
            Change::delete(row(5, 0)),
            Change::insert(row(5, 9)),
        ];
        let got: Vec<(Row, Option<Row>)> = final_states(&t.primary_key, &changes)
            .into_iter()
            .map(|(k, r)| (k.to_row(), r.cloned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![Value::Int(1)], Some(row(1, 2))),
                (vec![Value::Int(2)], None),
                (vec![Value::Int(3)], None),
                (vec![Value::Int(4)], Some(row(4, 1))),
                (vec![Value::Int(5)], Some(row(5, 9))),
            ]
        );
    }
}
