//! The PostgreSQL sink.
//!
//! - [`types`]: the type mapping and identifier quoting.
//! - [`ddl`]: creating target tables, and checking existing ones.
//! - [`copy`]: COPY text and binary encoding, sent in chunks.
//! - `writer`: one table's part of a batch: a direct COPY while rows are new, a staging
//!   merge (`INSERT … ON CONFLICT`) otherwise, deletes, and the bad-row search.
//! - [`initial_load`]: loading a backlog with the primary key deferred.
//! - `prepare`: a table readied before its lane starts ([`PgSink::prepare_table`]).
//!
//! One [`PgSink`] writes the tables of one lane over one connection, each batch in one
//! transaction together with the tables' positions ([`crate::state::advance`]).

pub mod copy;
pub mod ddl;
pub mod foreign_keys;
pub mod initial_load;
pub mod lock;
pub mod map;
mod prepare;
pub mod reshape;
pub mod types;
mod writer;

use std::collections::HashMap;

use futures::future::BoxFuture;
use sea_orm::sqlx;
use sea_orm::sqlx::postgres::PgConnection;

pub use self::prepare::PrepareTable;
use self::writer::TableWriter;
use super::{CaughtUp, PartApplied, Sink};
use crate::config::{CopyFormat, OnBadRow};
use crate::error::{Error, Result, Side};
use crate::model::{Batch, TableId};
pub use crate::sink::SinkTable;
use crate::state::ownership::repair_lock;
use crate::state::{self, StateKey};

pub use crate::conn::target as connect;

/// How the sink writes.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub url: String,
    pub schema: String,
    pub pipeline: String,
    pub on_bad_row: OnBadRow,
    pub copy_format: CopyFormat,
    /// Appears in `pg_stat_activity` as `sluice <role>`.
    pub role: String,
    /// The helper connection a table's wait for a DDL lock is recorded through.
    pub helpers: crate::conn::SharedHelpers,
    /// How DDL on the tables (TRUNCATE, the deferred key) waits for its locks.
    pub lock_wait: lock::LockWait,
    /// Mirror the source's secondary indexes (`[pipeline] indexes`): `None` no; `Some(true)`
    /// with unique ones as unique constraints checked at commit (binlog capture, whose
    /// batches end at source transactions); `Some(false)` all as plain indexes (polling).
    pub indexes: Option<bool>,
}

/// Writes batches of a set of tables into PostgreSQL.
pub struct PgSink {
    opts: SinkOptions,
    conn: Option<PgConnection>,
    tables: HashMap<TableId, TableWriter>,
    /// COPY encoding buffer, reused.
    buf: Vec<u8>,
    /// A transaction is open: chunks of a large source transaction are being applied.
    open: bool,
    /// Foreign keys not mirrored on the target yet, by child table.
    fks: Vec<(TableId, crate::model::ForeignKey)>,
    /// Tables still being loaded.
    loading: std::collections::HashSet<TableId>,
    /// The foreign keys mirrored earlier and no longer wanted are dropped.
    pruned: bool,
    /// Some table streamed when the sink was made (the others are copied beside it).
    streamed_at_start: bool,
    /// Tables whose repair lock the open transaction holds.
    locked: std::collections::HashSet<TableId>,
    /// The table whose part the last failed batch failed on ([`Sink::failed_table`]).
    failed: Option<TableId>,
}

/// Runs a transaction-control statement.
async fn raw(conn: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::db(Side::Target, format!("{sql} on the target"), &e))
}

impl PgSink {
    pub fn new(opts: SinkOptions, tables: Vec<SinkTable>) -> Self {
        let fks = tables
            .iter()
            .flat_map(|t| t.foreign_keys.iter().map(|fk| (t.id, fk.clone())))
            .collect();
        let loading: std::collections::HashSet<TableId> =
            tables.iter().filter(|t| t.loading).map(|t| t.id).collect();
        let streamed_at_start = tables.iter().any(|t| !t.loading);
        let parents: std::collections::HashSet<TableId> = tables
            .iter()
            .flat_map(|t| &t.foreign_keys)
            .filter(|fk| fk.on_delete != crate::model::FkAction::None)
            .map(|fk| fk.parent)
            .collect();
        let tables = tables
            .into_iter()
            .map(|t| {
                let key = StateKey::new(&opts.pipeline, &t.model.name);
                let id = t.id;
                let mut w = TableWriter::new(&opts, key, t);
                w.cascade_parent = parents.contains(&id);
                (id, w)
            })
            .collect();
        PgSink {
            opts,
            conn: None,
            tables,
            buf: Vec::new(),
            open: false,
            fks,
            loading,
            pruned: false,
            streamed_at_start,
            locked: std::collections::HashSet::new(),
            failed: None,
        }
    }

    /// Mirrors the foreign keys whose tables are both loaded (and are this sink's).
    async fn mirror_foreign_keys(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().expect("connected before");
        if !self.pruned {
            // Mirrored keys no longer wanted go first, once per sink.
            for (&id, w) in &self.tables {
                let wanted: Vec<crate::model::ForeignKey> = self
                    .fks
                    .iter()
                    .filter(|(child, _)| *child == id)
                    .map(|(_, fk)| fk.clone())
                    .collect();
                foreign_keys::drop_unwanted(conn, w.target(), &wanted).await?;
            }
            self.pruned = true;
        }
        if self.fks.is_empty() {
            return Ok(());
        }
        let mut left = Vec::new();
        let mut pending = std::mem::take(&mut self.fks).into_iter();
        while let Some((child, fk)) = pending.next() {
            let ready = !self.loading.contains(&child) && !self.loading.contains(&fk.parent);
            let (Some(c), Some(p)) = (self.tables.get(&child), self.tables.get(&fk.parent)) else {
                continue;
            };
            if !ready {
                left.push((child, fk));
                continue;
            }
            // The parent's columns in the target's names.
            let mapped = crate::model::ForeignKey {
                parent_columns: fk
                    .parent_columns
                    .iter()
                    .map(|n| p.map().column(n))
                    .collect(),
                ..fk.clone()
            };
            let mirrored =
                foreign_keys::mirror(conn, c.target(), c.model(), p.target(), p.model(), &mapped)
                    .await;
            if let Err(e) = mirrored {
                // Kept, with those not tried yet: the next batch (after the lane's retry)
                // mirrors them, so no cascade goes missing on the target.
                left.push((child, fk));
                left.extend(pending);
                self.fks = left;
                return Err(e);
            }
        }
        self.fks = left;
        Ok(())
    }

    async fn conn(&mut self) -> Result<&mut PgConnection> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.opts.url, &self.opts.role).await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn writer(tables: &mut HashMap<TableId, TableWriter>, id: TableId) -> Result<&mut TableWriter> {
        tables
            .get_mut(&id)
            .ok_or_else(|| Error::Other(format!("table #{id} is not served by this sink")))
    }

    async fn apply_batch(&mut self, batch: &Batch) -> Result<Vec<PartApplied>> {
        self.failed = None;
        self.conn().await?;
        if !self.open {
            self.mirror_foreign_keys().await?;
        }
        let conn = self.conn.as_mut().expect("connected above");
        if !self.open {
            for part in &batch.parts {
                let prepared = Self::writer(&mut self.tables, part.table)?
                    .prepare(conn)
                    .await;
                if prepared.is_err() {
                    self.failed = Some(part.table);
                }
                prepared?;
            }
            self.locked.clear();
        }
        // Every table the transaction writes: its repair lock, shared, so a background
        // repair (verify::check) never interleaves with a batch. Taken with BEGIN, or when a
        // later chunk of the transaction brings another table.
        let locks: Vec<String> = batch
            .parts
            .iter()
            .filter(|p| self.locked.insert(p.table))
            .filter_map(|p| self.tables.get(&p.table))
            .map(|w| repair_lock(w.key(), true))
            .collect();
        let mut sql = if self.open {
            String::new()
        } else {
            "BEGIN; ".to_string()
        };
        if !locks.is_empty() {
            sql.push_str(&format!("SELECT {}", locks.join(", ")));
        }
        if !sql.is_empty() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .map_err(|e| Error::db(Side::Target, "BEGIN on the target", &e))?;
        }
        self.open = true;
        let mut out = Vec::with_capacity(batch.parts.len());
        for part in &batch.parts {
            let loading = self.loading.contains(&part.table);
            let w = Self::writer(&mut self.tables, part.table)?;
            match w.apply(conn, part, &mut self.buf, loading).await {
                Ok(applied) => out.push(applied),
                Err(e) => {
                    self.failed = Some(part.table);
                    return Err(e);
                }
            }
        }
        if !batch.commit {
            // A chunk of a larger source transaction: the next chunks go in this one.
            return Ok(out);
        }
        let mut advances = Vec::with_capacity(batch.parts.len());
        for (part, applied) in batch.parts.iter().zip(&out) {
            let w = self.tables.get(&part.table).ok_or_else(|| {
                Error::Other(format!("table #{} is not served by this sink", part.table))
            })?;
            if part.position.0.is_null() {
                // Never store "no position": that would mean starting the table over.
                return Err(Error::Other(format!(
                    "a batch of {:?} came without its position; nothing of it is committed",
                    w.model().name
                )));
            }
            advances.push(state::Advance {
                key: w.key(),
                epoch: w.epoch(),
                position: &part.position,
                rows: applied.rows as i64,
                source_time: part.source_time,
            });
        }
        state::advance_all(conn, &advances).await?;
        crate::failpoint::hit("before_commit");
        raw(conn, "COMMIT").await?;
        self.open = false;
        if batch.parts.iter().any(|p| p.shape.is_some()) {
            crate::failpoint::hit("after_shape_commit");
        }
        for part in &batch.parts {
            Self::writer(&mut self.tables, part.table)?.committed();
        }
        Ok(out)
    }

    async fn catch_up(&mut self, table: TableId) -> Result<CaughtUp> {
        self.conn().await?;
        let conn = self.conn.as_mut().expect("connected above");
        // Binlog capture (one lane, transaction order) where others stream already (a table
        // copied beside the stream): its indexes are built off the lane, so none of them
        // waits. One build at a time, on one more connection to the target. (Polling's
        // lanes, up to `max_target_connections`, build in the lane as before.)
        // Not in a new pipeline's first snapshot (nothing streams yet), and not for a table
        // with a foreign key still to mirror: that `ALTER TABLE` in the lane and the
        // concurrent build wait for each other (PostgreSQL reports a deadlock).
        let others_stream = self.opts.indexes == Some(true)
            && self.streamed_at_start
            && !self
                .fks
                .iter()
                .any(|(child, fk)| *child == table || fk.parent == table)
            && self
                .tables
                .keys()
                .any(|id| *id != table && !self.loading.contains(id));
        let w = Self::writer(&mut self.tables, table)?;
        let key_built = w.build_key(conn).await?;
        if let (Some(unique), true) = (self.opts.indexes, others_stream && key_built.is_none()) {
            let (url, role) = (self.opts.url.clone(), self.opts.role.clone());
            let (schema, wait) = (w.schema().to_string(), self.opts.lock_wait);
            let (model, handle) = (w.model().clone(), w.handle().clone());
            // A thread of its own: the writer runs on a sync actor's thread, whose runtime
            // only turns while a batch is applied.
            let build = async move {
                tracing::info!(table = %model.name, "building the copied table's indexes beside the stream");
                let built = async {
                    let mut conn = connect(&url, &role).await?;
                    // A build waiting for a lock notices that sluice is gone (PostgreSQL
                    // 14 on): it ends there, leaving an invalid index that the next start
                    // builds again, rather than finishing unmarked.
                    let _ = sqlx::raw_sql("SET client_connection_check_interval = '1s'")
                        .execute(&mut conn)
                        .await;
                    reshape::build_indexes_concurrently(
                        &mut conn,
                        &schema,
                        &model,
                        unique,
                        wait,
                        Some(&handle),
                    )
                    .await
                }
                .await;
                if let Err(e) = built {
                    tracing::error!(table = %model.name, error = %e, "building the copied table's indexes failed; its rows are complete and replication goes on without them. The next start of sluice builds them again (or fix what the error names and restart)");
                }
            };
            let spawned = std::thread::Builder::new()
                .name("sluice-index-build".into())
                .spawn(move || {
                    // One build at a time in the process: one connection more at most.
                    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
                    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(build),
                        Err(e) => tracing::error!(error = %e, "no runtime for the index build; the next start of sluice builds the indexes"),
                    }
                });
            if let Err(e) = spawned {
                return Err(Error::Other(format!(
                    "starting the thread that builds the copied table's indexes: {e}"
                )));
            }
        } else if let Some(unique) = self.opts.indexes {
            // The load is over: the source's indexes, built once rather than row by row.
            raw(conn, "BEGIN").await?;
            let synced = reshape::sync_indexes(
                conn,
                w.schema(),
                w.model(),
                unique,
                self.opts.lock_wait,
                Some(w.handle()),
            )
            .await;
            if let Err(e) = synced {
                // Leave the connection as the next batch expects it: no transaction open.
                let _ = raw(conn, "ROLLBACK").await;
                return Err(e);
            }
            raw(conn, "COMMIT").await?;
        }
        self.loading.remove(&table);
        self.mirror_foreign_keys().await?;
        Ok(CaughtUp { key_built })
    }
}

impl Sink for PgSink {
    fn apply<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Vec<PartApplied>>> {
        Box::pin(self.apply_batch(batch))
    }

    fn caught_up(&mut self, table: TableId) -> BoxFuture<'_, Result<CaughtUp>> {
        Box::pin(self.catch_up(table))
    }

    fn in_transaction(&self) -> bool {
        self.open
    }

    fn failed_table(&self) -> Option<TableId> {
        self.failed
    }

    fn reset(&mut self) {
        self.conn = None;
        self.open = false;
        for w in self.tables.values_mut() {
            w.reconnected();
        }
    }
}
