//! The one store of replication state: `sluice.replication_state` (positions, the initial
//! load's deferred key, errors, ownership epochs) and `sluice.dead_letters`, on the target.
//! Every statement that touches them is here; the entity
//! (`entities::replication_state`) documents what each column means.
//!
//! State is keyed by `(pipeline, table)` ([`StateKey`]). Writes that carry progress
//! ([`advance`], [`set_deferred_key`]) check the table's ownership epoch and fail with
//! [`Error::Fenced`] when another process has taken the table over since this one claimed
//! it (see [`ownership`]).

pub mod members;
pub mod ownership;

use sea_orm::sqlx::{self, PgConnection};

use crate::error::{on_target as tgt, Error, Result};
use crate::model::Position;

/// Which row of `sluice.replication_state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub pipeline: String,
    pub table: String,
}

impl StateKey {
    pub fn new(pipeline: &str, table: &str) -> Self {
        StateKey {
            pipeline: pipeline.to_string(),
            table: table.to_string(),
        }
    }
}

/// What is stored for a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub position: Option<Position>,
    pub deferred_key: Option<String>,
    pub owner_epoch: i64,
    /// `sluice snapshot` asked for the table to be copied again.
    pub snapshot_requested: bool,
}

/// The stored state of a table, if any.
pub async fn load(conn: &mut PgConnection, key: &StateKey) -> Result<Option<Stored>> {
    let row: Option<(Option<serde_json::Value>, Option<String>, i64, bool)> = sqlx::query_as(
        "SELECT position, deferred_key, owner_epoch, snapshot_requested IS NOT NULL \
         FROM sluice.replication_state WHERE pipeline = $1 AND table_name = $2",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(tgt(format!("reading the state of {:?}", key.table)))?;
    Ok(row.map(
        |(position, deferred_key, owner_epoch, snapshot_requested)| Stored {
            position: position.filter(|p| !p.is_null()).map(Position),
            deferred_key,
            owner_epoch,
            snapshot_requested,
        },
    ))
}

/// Asks for tables of `pipeline` to be copied again (`sluice snapshot`), all or none:
/// returns the ones that have no state in that pipeline (never replicated: nothing to ask
/// for), and records nothing then.
pub async fn request_snapshot(
    conn: &mut PgConnection,
    pipeline: &str,
    tables: &[String],
) -> Result<Vec<String>> {
    use sea_orm::sqlx::Connection;
    let mut tx = conn
        .begin()
        .await
        .map_err(tgt("beginning the snapshot request"))?;
    let known: Vec<String> = sqlx::query_scalar(
        "UPDATE sluice.replication_state SET snapshot_requested = now() \
         WHERE pipeline = $1 AND table_name = ANY($2) RETURNING table_name",
    )
    .bind(pipeline)
    .bind(tables)
    .fetch_all(&mut *tx)
    .await
    .map_err(tgt("recording the snapshot request"))?;
    let unknown: Vec<String> = tables
        .iter()
        .filter(|t| !known.contains(t))
        .cloned()
        .collect();
    if unknown.is_empty() {
        tx.commit()
            .await
            .map_err(tgt("committing the snapshot request"))?;
    }
    Ok(unknown)
}

/// The tables among `tables` of `pipeline` that `sluice snapshot` asked to copy again.
pub async fn snapshot_requests(
    conn: &mut PgConnection,
    pipeline: &str,
    tables: &[String],
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT table_name FROM sluice.replication_state \
         WHERE pipeline = $1 AND table_name = ANY($2) AND snapshot_requested IS NOT NULL \
         ORDER BY table_name",
    )
    .bind(pipeline)
    .bind(tables)
    .fetch_all(&mut *conn)
    .await
    .map_err(tgt("reading the snapshot requests"))
}

/// Takes a snapshot request as the table's owner (`epoch`): empties the target table
/// (`target`, qualified) and forgets the table's position, in one transaction, so the table
/// is copied from the source as a new one would be. A table the target cannot empty (other
/// target tables' foreign keys reference it) keeps its position: the request is dropped,
/// and the error says why. Fails with [`Error::Fenced`] when the table is no longer this
/// process's.
pub async fn take_snapshot_request(
    conn: &mut PgConnection,
    key: &StateKey,
    epoch: i64,
    target: &str,
) -> Result<std::result::Result<(), String>> {
    use sea_orm::sqlx::{AssertSqlSafe, Connection};
    let mut tx = conn
        .begin()
        .await
        .map_err(tgt("beginning the snapshot request's transaction"))?;
    let n = sqlx::query(
        "UPDATE sluice.replication_state \
         SET position = NULL, snapshot_requested = NULL, source_time = NULL, \
             last_error = NULL, updated_at = now() \
         WHERE pipeline = $1 AND table_name = $2 AND owner_epoch = $3",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(epoch)
    .execute(&mut *tx)
    .await
    .map_err(tgt(format!(
        "taking the snapshot request of {:?}",
        key.table
    )))?
    .rows_affected();
    if n == 0 {
        return Err(fenced(key, epoch));
    }
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE {target}")))
        .execute(&mut *tx)
        .await
    {
        drop(tx);
        sqlx::query(
            "UPDATE sluice.replication_state SET snapshot_requested = NULL \
             WHERE pipeline = $1 AND table_name = $2 AND owner_epoch = $3",
        )
        .bind(&key.pipeline)
        .bind(&key.table)
        .bind(epoch)
        .execute(&mut *conn)
        .await
        .map_err(tgt(format!(
            "dropping the snapshot request of {:?}",
            key.table
        )))?;
        return Ok(Err(format!(
            "table {:?} is not copied again, as `sluice snapshot` asked: emptying its target \
             table {target} failed ({e}), so the request is dropped and the table goes on from \
             its position. sluice does not copy again a table that other target tables' foreign \
             keys reference (emptying it would empty or break them); `sluice verify --table {} \
             --repair` brings it equal instead",
            key.table, key.table
        )));
    }
    tx.commit()
        .await
        .map_err(tgt("committing the snapshot request's transaction"))?;
    Ok(Ok(()))
}

/// Makes this process the table's owner: adopts a row stored before pipelines had names
/// (pipeline `''`), creates the row if missing, bumps `owner_epoch` and returns it. Call it
/// while holding the table's advisory lock ([`ownership`]), so owners take turns.
pub async fn claim(conn: &mut PgConnection, key: &StateKey, owner: &str) -> Result<i64> {
    let adopted = sqlx::query(
        "UPDATE sluice.replication_state SET pipeline = $1 \
         WHERE pipeline = '' AND table_name = $2 AND NOT EXISTS \
           (SELECT 1 FROM sluice.replication_state WHERE pipeline = $1 AND table_name = $2)",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .execute(&mut *conn)
    .await
    .map_err(tgt(
        "adopting a table's state stored before pipelines had names",
    ))?
    .rows_affected();
    if adopted > 0 {
        tracing::info!(table = %key.table, pipeline = %key.pipeline, "adopted the table's state stored before pipelines had names");
    }
    let epoch: i64 = sqlx::query_scalar(
        "INSERT INTO sluice.replication_state AS s (pipeline, table_name, owner_epoch, owner) \
         VALUES ($1, $2, 1, $3) \
         ON CONFLICT (pipeline, table_name) DO UPDATE \
           SET owner_epoch = s.owner_epoch + 1, owner = EXCLUDED.owner \
         RETURNING owner_epoch",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(owner)
    .fetch_one(&mut *conn)
    .await
    .map_err(tgt(format!("claiming table {:?}", key.table)))?;
    Ok(epoch)
}

/// The table's current ownership epoch.
pub async fn epoch(conn: &mut PgConnection, key: &StateKey) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT owner_epoch FROM sluice.replication_state WHERE pipeline = $1 AND table_name = $2",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(tgt(format!("reading the owner of {:?}", key.table)))
}

fn fenced(key: &StateKey, epoch: i64) -> Error {
    Error::Fenced {
        table: key.table.clone(),
        message: format!(
            "another sluice process has taken this table over (this process held ownership epoch {epoch}); it writes nothing more for it"
        ),
    }
}

/// Moves the table's position forward, in the transaction `tx` that applies the changes it
/// covers, counting `rows` more rows replicated. Fails with [`Error::Fenced`] (and the caller
/// rolls back) when `epoch` is no longer the table's.
pub async fn advance(
    tx: &mut PgConnection,
    key: &StateKey,
    epoch: i64,
    position: &Position,
    rows: i64,
    source_time: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE sluice.replication_state \
         SET position = $4, rows_replicated = rows_replicated + $5, updated_at = now(), \
             last_error = NULL, source_time = COALESCE($6, source_time) \
         WHERE pipeline = $1 AND table_name = $2 AND owner_epoch = $3",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(epoch)
    .bind(&position.0)
    .bind(rows)
    .bind(source_time)
    .execute(&mut *tx)
    .await
    .map_err(tgt(format!("advancing the position of {:?}", key.table)))?
    .rows_affected();
    if n == 0 {
        return Err(fenced(key, epoch));
    }
    Ok(())
}

/// One table's position to store with its batch (see [`advance_all`]).
#[derive(Clone, Copy)]
pub struct Advance<'a> {
    pub key: &'a StateKey,
    pub epoch: i64,
    pub position: &'a Position,
    pub rows: i64,
    pub source_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// [`advance`] for each of a batch's tables, in one statement (one round trip, however many
/// tables the batch wrote), checking ownership of every one. A table with more than one part
/// in the batch (tables whose changes keep their order with others') ends at its last part's
/// position, its rows counted once each, as if each part had been stored in turn.
pub async fn advance_all(tx: &mut PgConnection, parts: &[Advance<'_>]) -> Result<()> {
    let mut all: Vec<Advance<'_>> = Vec::with_capacity(parts.len());
    for p in parts {
        match all.iter_mut().find(|a| a.key == p.key) {
            Some(a) => {
                a.position = p.position;
                a.rows += p.rows;
                a.source_time = p.source_time.or(a.source_time);
            }
            None => all.push(*p),
        }
    }
    let all = all.as_slice();
    if let [a] = all {
        return advance(tx, a.key, a.epoch, a.position, a.rows, a.source_time).await;
    }
    if all.is_empty() {
        return Ok(());
    }
    let n = sqlx::query(
        "UPDATE sluice.replication_state s \
         SET position = u.position, rows_replicated = s.rows_replicated + u.rows, \
             updated_at = now(), last_error = NULL, \
             source_time = COALESCE(u.source_time, s.source_time) \
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::bigint[], $6::timestamptz[]) \
             AS u(pipeline, table_name, epoch, position, rows, source_time) \
         WHERE s.pipeline = u.pipeline AND s.table_name = u.table_name AND s.owner_epoch = u.epoch",
    )
    .bind(all.iter().map(|a| a.key.pipeline.clone()).collect::<Vec<_>>())
    .bind(all.iter().map(|a| a.key.table.clone()).collect::<Vec<_>>())
    .bind(all.iter().map(|a| a.epoch).collect::<Vec<_>>())
    .bind(all.iter().map(|a| a.position.0.clone()).collect::<Vec<_>>())
    .bind(all.iter().map(|a| a.rows).collect::<Vec<_>>())
    .bind(all.iter().map(|a| a.source_time).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(tgt("advancing the positions of a batch's tables"))?
    .rows_affected();
    if n == all.len() as u64 {
        return Ok(());
    }
    // Which one another process took over: named in the error.
    for a in all {
        let owned: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM sluice.replication_state \
             WHERE pipeline = $1 AND table_name = $2 AND owner_epoch = $3",
        )
        .bind(&a.key.pipeline)
        .bind(&a.key.table)
        .bind(a.epoch)
        .fetch_optional(&mut *tx)
        .await
        .map_err(tgt("reading the owners of a batch's tables"))?;
        if owned.is_none() {
            return Err(fenced(a.key, a.epoch));
        }
    }
    Err(Error::Other(format!(
        "advancing the positions of {} tables updated {n} rows",
        all.len()
    )))
}

/// Records (`Some`) or clears (`None`) the primary-key constraint an initial load dropped,
/// in `tx`, checking ownership.
pub async fn set_deferred_key(
    tx: &mut PgConnection,
    key: &StateKey,
    epoch: i64,
    constraint: Option<&str>,
) -> Result<()> {
    let n = sqlx::query(
        // Clearing it ends the load: a wait `status` showed for the key build is over too.
        "UPDATE sluice.replication_state SET deferred_key = $4, \
             last_error = CASE WHEN $4 IS NULL THEN NULL ELSE last_error END \
         WHERE pipeline = $1 AND table_name = $2 AND owner_epoch = $3",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(epoch)
    .bind(constraint)
    .execute(&mut *tx)
    .await
    .map_err(tgt(
        "recording the initial load in sluice.replication_state",
    ))?
    .rows_affected();
    if n == 0 {
        return Err(fenced(key, epoch));
    }
    Ok(())
}

/// The deferred key still recorded, read in `tx` (so a retry after a lost COMMIT sees
/// whether the key was built).
pub async fn deferred_key(tx: &mut PgConnection, key: &StateKey) -> Result<Option<String>> {
    let name: Option<Option<String>> = sqlx::query_scalar(
        "SELECT deferred_key FROM sluice.replication_state \
         WHERE pipeline = $1 AND table_name = $2",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .fetch_optional(&mut *tx)
    .await
    .map_err(tgt("reading the load state"))?;
    Ok(name.flatten())
}

/// Records an error against the table, for `status`. Only while this process owns it (a
/// process that lost the table leaves the new owner's row alone).
pub async fn record_error(
    conn: &mut PgConnection,
    key: &StateKey,
    epoch: i64,
    message: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE sluice.replication_state SET last_error = $4 \
         WHERE pipeline = $1 AND table_name = $2 AND owner_epoch = $3",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(epoch)
    .bind(message)
    .execute(&mut *conn)
    .await
    .map_err(tgt("recording an error in sluice.replication_state"))?;
    Ok(())
}

/// Keeps a row PostgreSQL refused, with its key and the error, in `tx` (the batch's
/// transaction). `key` and `row` are JSON objects (column name → typed value).
pub async fn dead_letter(
    tx: &mut PgConnection,
    key: &StateKey,
    row_key: &str,
    row: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sluice.dead_letters (pipeline, table_name, key, row, error) \
         VALUES ($1, $2, $3::json, $4::json, $5)",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(row_key)
    .bind(row)
    .bind(reason.replace('\0', "\\0"))
    .execute(&mut *tx)
    .await
    .map_err(tgt("writing to sluice.dead_letters"))?;
    Ok(())
}

/// Records a table's new shape in `sluice.schema_history` (in the caller's transaction, the
/// one that applies it): the model, the source position of its first change (`None` at
/// start), and the statements run on the target.
pub async fn record_shape(
    tx: &mut PgConnection,
    key: &StateKey,
    model: &crate::model::TableModel,
    position: Option<&Position>,
    ddl: &[String],
    mapping: Option<&str>,
) -> Result<()> {
    let json = serde_json::to_value(model)
        .map_err(|e| Error::Other(format!("the table model does not serialise: {e}")))?;
    sqlx::query(
        "INSERT INTO sluice.schema_history (pipeline, table_name, version, position, model, ddl, mapping) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (pipeline, table_name, version) DO UPDATE \
           SET position = EXCLUDED.position, model = EXCLUDED.model, ddl = EXCLUDED.ddl, \
               mapping = EXCLUDED.mapping, applied_at = now()",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(model.version as i32)
    .bind(position.map(|p| &p.0))
    .bind(json)
    .bind(ddl)
    .bind(mapping)
    .execute(&mut *tx)
    .await
    .map_err(tgt(format!(
        "recording the shape of {:?} in sluice.schema_history",
        key.table
    )))?;
    Ok(())
}

/// The shape version a table is in once `model` is applied on the target: the recorded
/// version while nothing changed (the same columns and indexes, and no DDL ran: `changed`),
/// else one more than the recorded one, so that versions count up from what the target
/// holds and a shape seen again after a restart is not recorded twice; `first` for a table
/// with no history. It is to be recorded when it differs from the recorded one.
pub fn next_version(
    recorded: Option<&crate::model::TableModel>,
    model: &crate::model::TableModel,
    changed: bool,
    first: u32,
) -> u32 {
    match recorded {
        Some(r) if !changed && r.same_shape(model) && r.indexes == model.indexes => r.version,
        Some(r) => r.version + 1,
        None => first,
    }
}

/// The newest shape recorded for a table (the one its target rows are in), with the
/// mapping recorded beside it.
pub async fn latest_recorded(
    conn: &mut PgConnection,
    key: &StateKey,
) -> Result<Option<(crate::model::TableModel, Option<String>)>> {
    latest(conn, key)
        .await?
        .map(|(m, mapping)| {
            serde_json::from_value(m)
                .map(|m| (m, mapping))
                .map_err(|e| {
                    Error::Other(format!(
                        "the shape of {:?} in sluice.schema_history cannot be read: {e}",
                        key.table
                    ))
                })
        })
        .transpose()
}

/// The newest shape recorded for a table: the one its target rows are in.
pub async fn latest_shape(
    conn: &mut PgConnection,
    key: &StateKey,
) -> Result<Option<crate::model::TableModel>> {
    Ok(latest_recorded(conn, key).await?.map(|(m, _)| m))
}

/// The newest row of a table's `sluice.schema_history`: its model and mapping.
async fn latest(
    conn: &mut PgConnection,
    key: &StateKey,
) -> Result<Option<(serde_json::Value, Option<String>)>> {
    sqlx::query_as(
        "SELECT model, mapping FROM sluice.schema_history WHERE pipeline = $1 AND table_name = $2 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(tgt(format!(
        "reading the shape of {:?} from sluice.schema_history",
        key.table
    )))
}
