//! Writing the target (PostgreSQL): target tables, the stored watermark, and the batch
//! writer that upserts rows and advances the watermark in one transaction.
//!
//! Delivery contract: a batch is applied with its watermark atomically, so a crash at any
//! instant leaves the target holding exactly the rows its watermark covers. Writes are
//! upserts keyed by the primary key, so re-delivering a batch (after a failed commit whose
//! outcome was unknown, say) changes nothing.
//! During an initial load with the key deferred ([`defer_key`]) there is no key to upsert
//! on: a re-delivered batch is copied again, and its second copy is removed (with older
//! copies of updated rows) in the transaction that builds the key ([`PgWriter::build_key`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, AssertSqlSafe, ConnectOptions, Connection};

use crate::config::{host_port, redact, CopyFormat, OnBadRow};
use crate::error::{Error, Result, Side};
use crate::source::schema::{quote_pg, target_type_accepts, TableSchema};
use crate::value::{encode_copy_binary, encode_copy_rows, BinType, Row, Value};
use tracing::warn;

/// SQLSTATE of a unique violation: the direct COPY met a row that already exists.
const UNIQUE_VIOLATION: &str = "23505";
/// After a direct COPY met an existing row, this many batches go straight to the merge.
const DIRECT_COOLDOWN_BATCHES: u32 = 16;

/// Opens one connection to the target.
pub async fn connect(url: &str) -> Result<PgConnection> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("target URL {} is not valid: {e}", redact(url))))?
        .application_name("sluice");
    opts.connect().await.map_err(|e| {
        let mut err = Error::db(
            Side::Target,
            format!("cannot connect to {} (URL {})", host_port(url), redact(url)),
            &e,
        );
        if let Error::Database { message, .. } = &mut err {
            message.push_str(
                "; check that PostgreSQL is running there and the URL (--target, SLUICE_TARGET_URL, [target] url) is right",
            );
        }
        err
    })
}

fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_pg(schema), quote_pg(table))
}

fn tgt(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let context = context.into();
    move |e| Error::db(Side::Target, context, &e)
}

/// Creates the target table from the source schema when it is missing; when it exists,
/// checks it has the same columns in the same order, types that hold every source value
/// ([`target_type_accepts`]), no NOT NULL where the source allows NULL, and a unique key on
/// the primary key (unless `key_deferred`: an initial load dropped it, see [`defer_key`]).
pub async fn ensure_table(
    conn: &mut PgConnection,
    target_schema: &str,
    t: &TableSchema,
    key_deferred: bool,
) -> Result<()> {
    let existing: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(target_schema)
    .bind(&t.name)
    .fetch_all(&mut *conn)
    .await
    .map_err(tgt(format!(
        "reading the columns of target table {target_schema}.{}",
        t.name
    )))?;
    let name = qualified(target_schema, &t.name);
    if existing.is_empty() {
        let mut cols: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{} {}{}",
                    quote_pg(&c.name),
                    c.pg_type,
                    if t.target_nullable(i) {
                        ""
                    } else {
                        " NOT NULL"
                    }
                )
            })
            .collect();
        cols.push(format!(
            "PRIMARY KEY ({})",
            t.primary_key
                .iter()
                .map(|&i| quote_pg(&t.columns[i].name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {name} ({})",
            quote_pg(target_schema),
            cols.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(tgt(format!(
                "creating target table {target_schema}.{}",
                t.name
            )))?;
        tracing::info!(table = %t.name, target = %format!("{target_schema}.{}", t.name), "created target table");
        return Ok(());
    }
    let want: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    let have: Vec<&str> = existing.iter().map(|(n, _, _)| n.as_str()).collect();
    if want != have {
        return Err(Error::Schema(format!(
            "target table {target_schema}.{} has columns ({}) but source table {:?} has ({}); they must match in name and order. Drop or rename the target table to let sluice create it, or fix its columns",
            t.name,
            have.join(", "),
            t.name,
            want.join(", ")
        )));
    }
    for (i, (c, (_, have_type, not_null))) in t.columns.iter().zip(&existing).enumerate() {
        if !target_type_accepts(c, have_type) {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{}: column {:?} has type {have_type}, which cannot hold every value of source column {:?} ({}); it needs {} (or a documented wider type). Fix it with ALTER TABLE {name} ALTER COLUMN {} TYPE {}, or drop the target table to let sluice create it",
                t.name,
                c.name,
                c.name,
                c.column_type,
                c.pg_type,
                quote_pg(&c.name),
                c.pg_type
            )));
        }
        if *not_null && t.target_nullable(i) {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{}: column {:?} is NOT NULL but source column {:?} ({}) can arrive as NULL (it allows NULL, or is a date whose zero dates become NULL under [source] zero_dates = \"null\"); fix it with ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL, or set zero_dates = \"error\" if the source holds no zero dates",
                t.name,
                c.name,
                c.name,
                c.column_type,
                quote_pg(&c.name)
            )));
        }
    }
    if key_deferred {
        return Ok(());
    }
    let pk: Vec<String> = t
        .primary_key
        .iter()
        .map(|&i| t.columns[i].name.clone())
        .collect();
    let has_unique: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i \
           JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL \
             AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a \
                  WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) \
                 = (SELECT array_agg(x ORDER BY x) FROM unnest($3::text[]) x) \
             AND i.indnkeyatts = cardinality($3::text[]))",
    )
    .bind(target_schema)
    .bind(&t.name)
    .bind(&pk)
    .fetch_one(&mut *conn)
    .await
    .map_err(tgt("checking the target table's primary key"))?;
    if !has_unique {
        return Err(Error::Schema(format!(
            "target table {target_schema}.{} has no primary key or unique index on ({}), which upserts need; add one: ALTER TABLE {name} ADD PRIMARY KEY ({})",
            t.name,
            pk.join(", "),
            pk.iter().map(|c| quote_pg(c)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Reads the stored watermark of a table. Refuses a watermark stored for other keyset
/// columns (the cursor or key changed in the config): it would not mean the same rows.
pub async fn load_position(conn: &mut PgConnection, t: &TableSchema) -> Result<Option<Vec<Value>>> {
    let row: Option<(serde_json::Value, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT key_columns, position FROM sluice.replication_state WHERE table_name = $1",
    )
    .bind(&t.name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(tgt(format!("reading the watermark of {:?}", t.name)))?;
    let Some((keys, position)) = row else {
        return Ok(None);
    };
    let stored: Vec<String> = serde_json::from_value(keys).unwrap_or_default();
    if stored != t.key_names() {
        return Err(Error::Schema(format!(
            "table {:?}: its watermark was stored for keyset ({}) but the configuration now gives ({}); restore the old cursor, or delete the row for this table from sluice.replication_state to start over",
            t.name,
            stored.join(", "),
            t.key_names().join(", ")
        )));
    }
    match position {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(p) => serde_json::from_value(p).map(Some).map_err(|e| {
            Error::Other(format!(
                "the stored watermark of {:?} is unreadable: {e}",
                t.name
            ))
        }),
    }
}

/// The primary-key constraint an unfinished initial load of `table` dropped (stored in
/// `sluice.replication_state.deferred_key`), if any.
pub async fn deferred_key(conn: &mut PgConnection, table: &str) -> Result<Option<String>> {
    let name: Option<Option<String>> = sqlx::query_scalar(
        "SELECT deferred_key FROM sluice.replication_state WHERE table_name = $1",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(tgt(format!("reading the load state of {table:?}")))?;
    Ok(name.flatten())
}

/// Starts an initial load with the primary key deferred, when it applies: `table` has no
/// watermark (checked by the caller), its target table is empty, its primary key is a
/// constraint no foreign key depends on, and the source holds at least `min_rows` rows.
/// Drops the key and records its name in `sluice.replication_state` in one transaction;
/// returns the name. The backlog then loads by plain COPY without index maintenance and
/// [`PgWriter::build_key`] builds the key once the source is caught up.
pub async fn defer_key(
    conn: &mut PgConnection,
    target_schema: &str,
    t: &TableSchema,
    source_rows: u64,
    min_rows: u64,
) -> Result<Option<String>> {
    if source_rows < min_rows {
        return Ok(None);
    }
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
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {name} DROP CONSTRAINT {}",
        quote_pg(&constraint)
    )))
    .execute(&mut *tx)
    .await
    .map_err(tgt(format!(
        "dropping the primary key of {name} for the initial load"
    )))?;
    sqlx::query(
        "INSERT INTO sluice.replication_state AS s (table_name, key_columns, deferred_key) \
         VALUES ($1, $2, $3) ON CONFLICT (table_name) DO UPDATE SET \
           key_columns = EXCLUDED.key_columns, deferred_key = EXCLUDED.deferred_key",
    )
    .bind(&t.name)
    .bind(serde_json::to_value(t.key_names()).expect("names serialise"))
    .bind(&constraint)
    .execute(&mut *tx)
    .await
    .map_err(tgt(
        "recording the initial load in sluice.replication_state",
    ))?;
    tx.commit()
        .await
        .map_err(tgt("committing the start of the initial load"))?;
    tracing::info!(table = %t.name, source_rows_estimated = source_rows, constraint = %constraint, "initial load into an empty table: primary key dropped while the backlog loads");
    Ok(Some(constraint))
}

/// What [`PgWriter::build_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBuilt {
    /// Older copies of rows updated during the load (a row whose cursor moved is read again),
    /// removed so the key could be built.
    pub duplicates_removed: u64,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub rows: usize,
    /// True when the batch went through the staging merge rather than a direct COPY.
    pub merged: bool,
    /// Rows PostgreSQL refused, written to `sluice.dead_letters` (`on_bad_row = "dead_letter"`).
    pub dead_lettered: usize,
}

/// Writes batches of one table. Owns its connection; one writer per table keeps the
/// watermark commits of that table in order.
pub struct PgWriter {
    conn: PgConnection,
    table: Arc<TableSchema>,
    copy_target: String,
    copy_stage: String,
    merge: String,
    create_stage: String,
    stage_ready: bool,
    /// Batches left before a direct COPY is tried again after one met an existing row.
    cooldown: u32,
    buf: Vec<u8>,
    on_bad_row: OnBadRow,
    /// The primary-key constraint dropped for the initial load, while it is not built
    /// again: batches are plain COPYs (nothing can conflict without the key).
    deferred_key: Option<String>,
    /// `INSERT … SELECT` from the stage, without `ON CONFLICT` (no key to conflict on).
    insert_stage: String,
    target: String,
    /// COPY binary column types, when every target column has one (see [`BinType`]);
    /// learnt from the target on the first write.
    binary: Option<Vec<BinType>>,
    format_known: bool,
    copy_format: CopyFormat,
}

/// Encodes `rows` for COPY into `buf`: binary when `binary` gives every column's type and
/// every value has a binary form, text otherwise. Returns whether it is binary.
fn encode_rows<'a, I>(binary: Option<&[BinType]>, rows: I, buf: &mut Vec<u8>) -> bool
where
    I: IntoIterator<Item = &'a Row> + Clone,
{
    buf.clear();
    if let Some(types) = binary {
        if encode_copy_binary(rows.clone(), types, buf) {
            return true;
        }
        buf.clear();
    }
    encode_copy_rows(rows, buf);
    false
}

/// The COPY statement for data encoded by [`encode_rows`].
fn copy_statement(text: &str, binary: bool) -> std::borrow::Cow<'_, str> {
    if binary {
        format!("{text} WITH (FORMAT binary)").into()
    } else {
        text.into()
    }
}

impl PgWriter {
    pub fn new(
        conn: PgConnection,
        table: Arc<TableSchema>,
        target_schema: &str,
        on_bad_row: OnBadRow,
        deferred_key: Option<String>,
        copy_format: CopyFormat,
    ) -> Self {
        let target = qualified(target_schema, &table.name);
        let cols: Vec<String> = table.columns.iter().map(|c| quote_pg(&c.name)).collect();
        let col_list = cols.join(", ");
        let pk: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| quote_pg(&table.columns[i].name))
            .collect();
        let action = conflict_action(&table);
        PgWriter {
            conn,
            copy_target: format!("COPY {target} ({col_list}) FROM STDIN"),
            copy_stage: format!("COPY pg_temp.sluice_stage ({col_list}) FROM STDIN"),
            merge: format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM pg_temp.sluice_stage ON CONFLICT ({}) {action}",
                pk.join(", ")
            ),
            // The stage mirrors the target's columns and types; it lives as long as the
            // connection and empties itself at every commit.
            create_stage: format!(
                "CREATE TEMP TABLE IF NOT EXISTS sluice_stage (LIKE {target}) ON COMMIT DELETE ROWS"
            ),
            insert_stage: format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM pg_temp.sluice_stage"
            ),
            stage_ready: false,
            cooldown: 0,
            buf: Vec::new(),
            on_bad_row,
            deferred_key,
            target,
            table,
            binary: None,
            format_known: false,
            copy_format,
        }
    }

    /// Applies `rows` (in keyset order) and moves the watermark to `position`, in one
    /// transaction. Tries a plain COPY into the table first (the fast path while rows are
    /// new); if a row already exists it rolls that back and merges through a staging table.
    pub async fn write(&mut self, rows: &[Row], position: &[Value]) -> Result<WriteOutcome> {
        if !self.format_known {
            self.learn_format().await?;
        }
        let name = self.table.name.clone();
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(tgt(format!("beginning a transaction for {name:?}")))?;
        let mut merged = false;
        let mut direct_done = false;
        let mut dead_lettered = 0;
        if self.deferred_key.is_some() {
            // No index to keep: the order does not matter.
            let bin = encode_rows(self.binary.as_deref(), rows.iter(), &mut self.buf);
            savepoint(&mut tx, "SAVEPOINT sluice_direct").await?;
            match copy(&mut tx, &copy_statement(&self.copy_target, bin), &self.buf).await {
                Ok(_) => direct_done = true,
                Err(e) if is_data_error(&e) => {
                    savepoint(&mut tx, "ROLLBACK TO SAVEPOINT sluice_direct").await?;
                }
                Err(e) => return Err(copy_error(&self.table, &e, rows.len())),
            }
        } else if self.cooldown == 0 {
            let sorted = sorted_by_key(&self.table, rows);
            let bin = encode_rows(
                self.binary.as_deref(),
                sorted.iter().copied(),
                &mut self.buf,
            );
            savepoint(&mut tx, "SAVEPOINT sluice_direct").await?;
            match copy(&mut tx, &copy_statement(&self.copy_target, bin), &self.buf).await {
                Ok(_) => direct_done = true,
                Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                    savepoint(&mut tx, "ROLLBACK TO SAVEPOINT sluice_direct").await?;
                    self.cooldown = DIRECT_COOLDOWN_BATCHES;
                }
                // A value PostgreSQL refuses: find it (and apply the rest) through the merge.
                Err(e) if is_data_error(&e) => {
                    savepoint(&mut tx, "ROLLBACK TO SAVEPOINT sluice_direct").await?;
                }
                Err(e) => return Err(copy_error(&self.table, &e, rows.len())),
            }
        } else {
            self.cooldown -= 1;
        }
        if !direct_done {
            merged = true;
            if !self.stage_ready {
                sqlx::raw_sql(AssertSqlSafe(self.create_stage.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map_err(tgt(format!("creating the staging table for {name:?}")))?;
            }
            let unique: Vec<&Row> = last_of_each_key(&self.table, rows).collect();
            let m = Merge {
                table: &self.table,
                copy_stage: &self.copy_stage,
                binary: self.binary.as_deref(),
                merge: if self.deferred_key.is_some() {
                    &self.insert_stage
                } else {
                    &self.merge
                },
                on_bad_row: self.on_bad_row,
            };
            dead_lettered = Self::merge_isolating(&m, &mut self.buf, &mut tx, &unique).await?;
        }
        let keys = serde_json::to_value(self.table.key_names()).expect("names serialise");
        let pos = serde_json::to_value(position).expect("values serialise");
        sqlx::query(
            "INSERT INTO sluice.replication_state AS s \
               (table_name, key_columns, position, rows_replicated, updated_at, last_error) \
             VALUES ($1, $2, $3, $4, now(), NULL) \
             ON CONFLICT (table_name) DO UPDATE SET key_columns = EXCLUDED.key_columns, \
               position = EXCLUDED.position, \
               rows_replicated = s.rows_replicated + EXCLUDED.rows_replicated, \
               updated_at = now(), last_error = NULL",
        )
        .bind(&name)
        .bind(keys)
        .bind(pos)
        .bind((rows.len() - dead_lettered) as i64)
        .execute(&mut *tx)
        .await
        .map_err(tgt(format!("advancing the watermark of {name:?}")))?;
        crate::failpoint::hit("before_commit");
        tx.commit()
            .await
            .map_err(tgt(format!("committing a batch of {name:?}")))?;
        // The stage exists once its creating transaction committed.
        if merged {
            self.stage_ready = true;
        }
        Ok(WriteOutcome {
            rows: rows.len() - dead_lettered,
            merged,
            dead_lettered,
        })
    }

    /// Copies `rows` into the stage and merges them into the table. Rows PostgreSQL refuses
    /// are found by halving the failing part under savepoints, so one bad row costs
    /// O(log n) extra statements and every good row is still applied. A bad row stops the
    /// table (`on_bad_row = "stop"`, the default) or goes to `sluice.dead_letters`.
    async fn merge_isolating(
        m: &Merge<'_>,
        buf: &mut Vec<u8>,
        tx: &mut PgConnection,
        rows: &[&Row],
    ) -> Result<usize> {
        let name = m.table.name.clone();
        let mut dead = 0;
        let mut parts = vec![(0, rows.len())];
        let mut first = true;
        while let Some((lo, hi)) = parts.pop() {
            if lo == hi {
                continue;
            }
            // The first attempt is the whole batch, with no savepoint overhead needed
            // beyond one.
            savepoint(tx, "SAVEPOINT sluice_part").await?;
            if !first {
                sqlx::raw_sql("TRUNCATE pg_temp.sluice_stage")
                    .execute(&mut *tx)
                    .await
                    .map_err(tgt("emptying the staging table"))?;
            }
            first = false;
            let bin = encode_rows(m.binary, rows[lo..hi].iter().copied(), buf);
            let res = match copy(tx, &copy_statement(m.copy_stage, bin), buf).await {
                Ok(_) => sqlx::raw_sql(AssertSqlSafe(m.merge))
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
                    let key = m.table.describe_key(row);
                    let reason = Error::db(Side::Target, "writing the row", &e).to_string();
                    match m.on_bad_row {
                        OnBadRow::Stop => {
                            return Err(Error::BadRow {
                                table: name,
                                key,
                                reason,
                            });
                        }
                        OnBadRow::DeadLetter => {
                            warn!(table = %name, key = %key, error = %reason, "row refused by PostgreSQL; written to sluice.dead_letters");
                            Self::dead_letter(m.table, tx, row, &reason).await?;
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
    async fn dead_letter(
        table: &TableSchema,
        tx: &mut PgConnection,
        row: &Row,
        reason: &str,
    ) -> Result<()> {
        let as_json = |idx: &mut dyn Iterator<Item = usize>| {
            let map: serde_json::Map<String, serde_json::Value> = idx
                .map(|i| {
                    (
                        table.columns[i].name.clone(),
                        serde_json::to_value(&row[i]).expect("values serialise"),
                    )
                })
                .collect();
            // `json`, not `jsonb`: it keeps `\u0000` escapes, which may be why the row failed.
            serde_json::Value::Object(map).to_string()
        };
        let key = as_json(&mut table.primary_key.iter().copied());
        let full = as_json(&mut (0..row.len()));
        sqlx::query(
            "INSERT INTO sluice.dead_letters (table_name, key, row, error) \
             VALUES ($1, $2::json, $3::json, $4)",
        )
        .bind(&table.name)
        .bind(key)
        .bind(full)
        .bind(reason.replace('\0', "\\0"))
        .execute(&mut *tx)
        .await
        .map_err(tgt("writing to sluice.dead_letters"))?;
        Ok(())
    }

    /// Reads the target columns' types and decides between COPY binary and text.
    async fn learn_format(&mut self) -> Result<()> {
        let types: Vec<String> = sqlx::query_scalar(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(&self.target)
        .fetch_all(&mut self.conn)
        .await
        .map_err(tgt(format!("reading the column types of {}", self.target)))?;
        self.binary = match self.copy_format {
            CopyFormat::Auto if types.len() == self.table.columns.len() => {
                types.iter().map(|t| BinType::of(t)).collect()
            }
            _ => None,
        };
        self.format_known = true;
        tracing::debug!(
            table = %self.table.name,
            format = if self.binary.is_some() { "binary" } else { "text" },
            "COPY format chosen"
        );
        Ok(())
    }

    /// True while the initial load's primary key is still to be built.
    pub fn key_deferred(&self) -> bool {
        self.deferred_key.is_some()
    }

    /// Ends an initial load: builds the primary key dropped by [`defer_key`] and clears
    /// `deferred_key`, in one transaction, so a crash leaves either the load still running
    /// or the key in place. Rows updated during the load were read again (their cursor
    /// moved) and so are present twice: if the index finds duplicates, every copy but the
    /// one with the greatest cursor is deleted first. The index is built with `CREATE
    /// UNIQUE INDEX` (readers of the target go on reading meanwhile) and then becomes the
    /// constraint. Does nothing when no key is deferred.
    pub async fn build_key(&mut self) -> Result<Option<KeyBuilt>> {
        let Some(constraint) = self.deferred_key.clone() else {
            return Ok(None);
        };
        let name = self.table.name.clone();
        let t = &self.table;
        let target = &self.target;
        let pk: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| quote_pg(&t.columns[i].name))
            .collect();
        let cursor: Vec<String> = t
            .cursor
            .iter()
            .map(|&i| quote_pg(&t.columns[i].name))
            .collect();
        let of = |alias: &str, cols: &[String]| {
            cols.iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let index = quote_pg(&constraint);
        let create = format!(
            "CREATE UNIQUE INDEX {index} ON {target} ({})",
            pk.join(", ")
        );
        let same_key = pk
            .iter()
            .map(|c| format!("a.{c} = b.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let (ac, bc) = (of("a", &cursor), of("b", &cursor));
        let dedupe = format!(
            "DELETE FROM {target} a USING {target} b WHERE {same_key} \
               AND (ROW({ac}) < ROW({bc}) \
                    OR (ROW({ac}) IS NOT DISTINCT FROM ROW({bc}) AND a.ctid < b.ctid))"
        );
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(tgt(format!("beginning the key build of {name:?}")))?;
        // A retry after a COMMIT whose outcome was lost finds the key already built.
        let still: Option<Option<String>> = sqlx::query_scalar(
            "SELECT deferred_key FROM sluice.replication_state WHERE table_name = $1 FOR UPDATE",
        )
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(tgt("reading the load state"))?;
        if still.flatten().is_none() {
            self.deferred_key = None;
            return Ok(Some(KeyBuilt {
                duplicates_removed: 0,
            }));
        }
        savepoint(&mut tx, "SAVEPOINT sluice_key").await?;
        let mut duplicates_removed = 0;
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(create.as_str()))
            .execute(&mut *tx)
            .await
        {
            if sqlstate(&e).as_deref() != Some(UNIQUE_VIOLATION) {
                return Err(Error::db(
                    Side::Target,
                    format!("building the primary key of {target}"),
                    &e,
                ));
            }
            savepoint(&mut tx, "ROLLBACK TO SAVEPOINT sluice_key").await?;
            duplicates_removed = sqlx::raw_sql(AssertSqlSafe(dedupe))
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
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {target} ADD CONSTRAINT {index} PRIMARY KEY USING INDEX {index}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(tgt(format!("making {index} the primary key of {target}")))?;
        sqlx::query(
            "UPDATE sluice.replication_state SET deferred_key = NULL WHERE table_name = $1",
        )
        .bind(&name)
        .execute(&mut *tx)
        .await
        .map_err(tgt("ending the initial load in sluice.replication_state"))?;
        crate::failpoint::hit("before_key_commit");
        tx.commit()
            .await
            .map_err(tgt(format!("committing the primary key of {target}")))?;
        self.deferred_key = None;
        Ok(Some(KeyBuilt { duplicates_removed }))
    }

    /// Records an error against the table in the state table, for `status`.
    pub async fn record_error(&mut self, message: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO sluice.replication_state AS s (table_name, key_columns, last_error) \
             VALUES ($1, $2, $3) ON CONFLICT (table_name) DO UPDATE SET last_error = EXCLUDED.last_error",
        )
        .bind(&self.table.name)
        .bind(serde_json::to_value(self.table.key_names()).expect("names serialise"))
        .bind(message)
        .execute(&mut self.conn)
        .await
        .map_err(tgt("recording an error in sluice.replication_state"))?;
        Ok(())
    }
}

/// A COPY the target refused: data errors (a value PostgreSQL will not take) name the
/// table; connection errors stay retryable.
fn copy_error(table: &TableSchema, e: &sqlx::Error, rows: usize) -> Error {
    let err = Error::db(
        Side::Target,
        format!("copying {rows} rows into {:?}", table.name),
        e,
    );
    match sqlstate(e).as_deref() {
        Some(code) if code.starts_with("22") || code.starts_with("23") => Error::BadRow {
            table: table.name.clone(),
            key: "(in a batch)".into(),
            reason: err.to_string(),
        },
        _ => err,
    }
}

/// `ON CONFLICT (pk)` action of an upsert: every non-key column takes the new value (or
/// nothing to do when all columns are the key).
pub fn conflict_action(table: &TableSchema) -> String {
    let updates: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.primary_key.contains(i))
        .map(|(_, c)| format!("{q} = EXCLUDED.{q}", q = quote_pg(&c.name)))
        .collect();
    if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    }
}

/// What the merge path needs of a writer, borrowed apart from its connection.
struct Merge<'a> {
    table: &'a TableSchema,
    copy_stage: &'a str,
    binary: Option<&'a [BinType]>,
    merge: &'a str,
    on_bad_row: OnBadRow,
}

/// Runs a SAVEPOINT / RELEASE / ROLLBACK TO statement.
async fn savepoint(tx: &mut PgConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *tx)
        .await
        .map_err(tgt(sql))?;
    Ok(())
}

/// A value the target refuses: a data exception (class 22) or an integrity violation (23).
fn is_data_error(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
}

async fn copy(
    tx: &mut PgConnection,
    statement: &str,
    data: &[u8],
) -> std::result::Result<u64, sqlx::Error> {
    let mut copy = tx.copy_in_raw(statement).await?;
    if let Err(e) = copy.send(data).await {
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The rows of a batch in primary-key order. Order inside a batch does not matter for
/// correctness (it commits as a whole), but PostgreSQL inserts into the primary-key index
/// far faster in key order than in cursor order, where keys (random UUIDs, say) are spread
/// over the whole index.
fn sorted_by_key<'a>(t: &TableSchema, rows: &'a [Row]) -> Vec<&'a Row> {
    let mut keyed: Vec<(Vec<u8>, &Row)> = rows
        .iter()
        .map(|row| {
            let mut k = Vec::new();
            for &c in &t.primary_key {
                row[c].write_copy_text(&mut k);
                k.push(0);
            }
            (k, row)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// The rows of a batch with only the last version of each primary key kept, in order: a
/// row updated while the batch was being read appears twice, and one INSERT … ON CONFLICT
/// may not touch a row twice.
fn last_of_each_key<'a>(t: &TableSchema, rows: &'a [Row]) -> impl Iterator<Item = &'a Row> {
    let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let mut k = Vec::new();
        for &c in &t.primary_key {
            row[c].write_copy_text(&mut k);
            k.push(b'\t');
        }
        last.insert(k, i);
    }
    let keep: std::collections::HashSet<usize> = last.into_values().collect();
    rows.iter()
        .enumerate()
        .filter(move |(i, _)| keep.contains(i))
        .map(|(_, r)| r)
}
