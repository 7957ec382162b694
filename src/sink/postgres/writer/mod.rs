//! One table's part of a batch, applied inside the batch's transaction.
//!
//! - **Inserts and upserts only** (polling, and most of a binlog): a plain COPY straight into
//!   the table, rows sorted by primary key (PostgreSQL inserts into the key's index far
//!   faster in key order). If a row already exists (an updated row coming round again), the
//!   COPY is rolled back to a savepoint and the part goes through the merge instead, and so
//!   do the next [`DIRECT_COOLDOWN_BATCHES`] parts. A part holding updates (binlog) goes
//!   straight to the merge: its rows are in the table already.
//! - **Merge:** the rows, only the last version of each key, are copied into a temporary
//!   stage and merged with `INSERT … SELECT … ON CONFLICT (pk) DO UPDATE` (a part of updates
//!   only: `UPDATE … FROM` the stage, then an insert of any row the table lacked). A row PostgreSQL
//!   refuses is found by halving the failing rows under savepoints, so it costs O(log n)
//!   statements and every good row is still applied; it then stops the table or becomes a
//!   dead letter (`on_bad_row`).
//! - **Deletes** (and updates that changed the key, whose old key is deleted): the changes
//!   are first reduced to each key's final state; the keys that end deleted are copied into
//!   a temporary table and deleted with one `DELETE … USING`, then the rest is merged.
//! - **While the key is deferred** (initial load): there is no key to conflict on, so rows
//!   are plain COPYs; a part with deletes or key changes first deletes every copy of each
//!   key it touches.
//!
//! Files: `sql` (the statements, built once per table and shape), `merge` (deletes, the
//! staging merge, the bad-row search and dead letters), `keys` (key order and each key's
//! final state).

mod keys;
mod merge;
mod sql;

use std::sync::Arc;

use sea_orm::sqlx::{self, AssertSqlSafe, PgConnection};
use tracing::{info, warn};

use self::keys::{final_states, sorted_by_key};
use self::sql::Statements;
use super::copy::{self, copy_rows, BinType};
use super::lock::{self, LockWait};
use super::reshape;
use super::types::qualified;
use super::{SinkOptions, SinkTable};
use crate::config::{CopyFormat, OnBadRow, OnDropColumn};
use crate::error::{on_target as tgt, Error, Result, Side};
use crate::model::{Change, ChangeSet, ColumnSet, Op, TableId, TableModel};
use crate::sink::postgres::map::TableMap;
use crate::sink::PartApplied;
use crate::state::StateKey;
use crate::value::Row;

/// SQLSTATE of a unique violation: the direct COPY met a row that already exists.
const UNIQUE_VIOLATION: &str = "23505";
/// After a direct COPY met an existing row, this many parts go straight to the merge.
const DIRECT_COOLDOWN_BATCHES: u32 = 16;

/// Writes one table.
pub(super) struct TableWriter {
    key: StateKey,
    id: TableId,
    /// The shape rows are written in: `committed`, or a newer one a schema change in the
    /// transaction under way brought.
    model: Arc<TableModel>,
    committed_model: Arc<TableModel>,
    /// The same shapes in the source's terms (what `sluice.schema_history` records and the
    /// rows come in); `model` is their mapping ([`TableMap`]).
    source: Arc<TableModel>,
    committed_source: Arc<TableModel>,
    map: TableMap,
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
    /// The table's stats: its DDL lock waits are counted there.
    handle: std::sync::Arc<crate::telemetry::TableHandle>,
    /// A mirrored foreign key deletes or changes other tables' rows when this table's rows go
    /// (`ON DELETE CASCADE`, `SET NULL`): a delete followed by a new row of the same key (a
    /// `REPLACE`) is applied as a delete and then an insert, never merged into an update,
    /// so the target's cascade runs as the source's did.
    pub(in crate::sink::postgres) cascade_parent: bool,
}

impl TableWriter {
    /// Runs a DDL statement on the table in `tx` without making its readers wait (see
    /// [`lock`](super::lock)), retrying until its lock is granted; after `[target]
    /// ddl_wait_ms`, `status` says what it waits for (cleared by the next commit).
    pub(super) async fn ddl(&self, tx: &mut PgConnection, sql: &str, what: &str) -> Result<()> {
        let since = chrono::Utc::now();
        let mut said = false;
        loop {
            match lock::ddl(
                tx,
                &self.target,
                sql,
                what,
                self.lock_wait,
                Some(&self.handle),
            )
            .await?
            {
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
        let source = t.model;
        let model = Arc::new(t.map.model(&source));
        let target = qualified(&t.map.schema, &model.name);
        let sql = Statements::build(t.id, &target, &model);
        TableWriter {
            key,
            id: t.id,
            committed_model: model.clone(),
            model,
            committed_source: source.clone(),
            source,
            schema: t.map.schema.clone(),
            map: t.map,
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
            handle: t.handle,
            cascade_parent: false,
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

    pub fn handle(&self) -> &std::sync::Arc<crate::telemetry::TableHandle> {
        &self.handle
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The target schema the table is in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn map(&self) -> &TableMap {
        &self.map
    }

    pub fn version_columns(&self) -> &[usize] {
        &self.version_columns
    }

    /// A new connection: its temporary tables are gone, and so is what an uncommitted
    /// transaction did (a schema change among it).
    pub fn reconnected(&mut self) {
        if !Arc::ptr_eq(&self.model, &self.committed_model) {
            self.model = self.committed_model.clone();
            self.source = self.committed_source.clone();
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
        self.committed_source = self.source.clone();
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
        let old = recorded.as_ref().unwrap_or(&self.committed_source);
        if let Some(e) = self.map.shape_problem(new) {
            return Err(e);
        }
        // The target's terms: the mapped shapes.
        let (old, mapped) = (self.map.model(old), Arc::new(self.map.model(new)));
        let have = reshape::target_columns(tx, &self.schema, &mapped.name).await?;
        let r = reshape::plan(&self.target, &have, Some(&old), &mapped, self.on_drop)?;
        for note in &r.notes {
            warn!(table = %new.name, "{note}");
        }
        let mut ran = r.statements.clone();
        for sql in &r.statements {
            self.ddl(tx, sql, "a schema change").await?;
        }
        // Indexes wait for the end of an initial load (then built at once).
        if let (Some(unique), false) = (self.indexes, loading || self.deferred_key.is_some()) {
            ran.extend(
                reshape::sync_indexes(
                    tx,
                    &self.schema,
                    &mapped,
                    unique,
                    self.lock_wait,
                    Some(&self.handle),
                )
                .await?,
            );
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
            crate::state::record_shape(
                tx,
                &self.key,
                &new,
                Some(position),
                &ran,
                self.map.description(),
            )
            .await?;
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
        self.model = Arc::new(self.map.model(new));
        self.source = new.clone();
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
        // Rows outside the filter (`where`) and masked columns (`mask_columns`) never reach
        // the target as they are.
        let first_reads = part.first_reads && self.deferred_key.is_some();
        let (masked, filtered) =
            match self
                .map
                .map_changes(&self.source, &part.changes, first_reads)
            {
                Some((changes, filtered)) => (Some(changes), filtered),
                None => (None, 0),
            };
        let all = masked.as_deref().unwrap_or(&part.changes);
        // A TRUNCATE makes every change before it moot: truncate, then apply the rest.
        let changes = match all.iter().rposition(|c| c.op == Op::Truncate) {
            Some(i) => {
                let sql = format!("TRUNCATE {}", self.target);
                self.ddl(tx, &sql, "TRUNCATE").await?;
                &all[i + 1..]
            }
            None => all,
        };
        let (mut merged, mut dead) = (false, 0);
        for segment in self.segments(changes) {
            let (m, d) = self.apply_changes(tx, segment, buf).await?;
            merged |= m;
            dead += d;
        }
        Ok(PartApplied {
            table: part.table,
            // Rows that reached the target: not those a filter kept off.
            rows: part.changes.len() - dead - filtered,
            merged,
            dead_lettered: dead,
            filtered,
        })
    }

    /// `changes` cut where a row of a cascade parent is deleted and then written again (see
    /// `cascade_parent`): each piece is applied after the one before.
    fn segments<'c>(&self, changes: &'c [Change]) -> Vec<&'c [Change]> {
        if !self.cascade_parent {
            return vec![changes];
        }
        let mut out = Vec::new();
        let mut start = 0;
        let mut deleted = std::collections::HashSet::new();
        for (i, c) in changes.iter().enumerate() {
            let key = keys::Key::of(&self.model.primary_key, &c.row);
            if c.op == Op::Delete {
                deleted.insert(key);
            } else if deleted.contains(&key) {
                out.push(&changes[start..i]);
                start = i;
                deleted.clear();
            }
        }
        out.push(&changes[start..]);
        out
    }

    /// One piece of a part's changes: plain inserts through COPY, key moves in order, the
    /// rest through the merge. Returns whether it merged, and the dead letters.
    async fn apply_changes(
        &mut self,
        tx: &mut PgConnection,
        changes: &[Change],
        buf: &mut Vec<u8>,
    ) -> Result<(bool, usize)> {
        let plain = changes.iter().all(|c| {
            matches!(c.op, Op::Insert | Op::Upsert) || (c.op == Op::Update && c.old_key.is_none())
        });
        let renames = self.deferred_key.is_none() && changes.iter().any(|c| self.renames(c));
        if changes.is_empty() {
            Ok((false, 0))
        } else if plain {
            self.apply_plain(tx, changes, buf).await
        } else if renames {
            self.apply_in_order(tx, changes, buf).await
        } else {
            self.apply_merged(tx, changes, buf).await
        }
    }

    /// Inserts and upserts: a direct COPY when it can, the merge otherwise. Returns whether
    /// it merged, and the dead letters.
    async fn apply_plain(
        &mut self,
        tx: &mut PgConnection,
        changes: &[Change],
        buf: &mut Vec<u8>,
    ) -> Result<(bool, usize)> {
        // Updated rows are in the table already (a binlog update of a row the table lacks is
        // rare): a COPY of them would fail on the first and be sent whole for nothing.
        let updates = changes.iter().any(|c| c.op == Op::Update);
        let try_direct = self.deferred_key.is_some() || (self.cooldown == 0 && !updates);
        if !try_direct {
            self.cooldown = self.cooldown.saturating_sub(1);
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
        // A part of updates only: the columns any of them changed (counted before each key's
        // last state is kept, so that an earlier update's columns are written too).
        let updates = changes.iter().all(|c| c.op == Op::Update).then(|| {
            changes
                .iter()
                .fold(ColumnSet::NONE, |s, c| s.union(c.changed))
        });
        let dead = self.merge_isolating(tx, &rows, updates, buf).await?;
        Ok((true, dead))
    }
}

/// Runs a SAVEPOINT / RELEASE / ROLLBACK TO statement.
pub(super) async fn savepoint(tx: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *tx)
        .await
        .map_err(tgt(sql))?;
    Ok(())
}

pub(super) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A value the target refuses: a data exception (class 22) or an integrity violation (23).
pub(super) fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}
