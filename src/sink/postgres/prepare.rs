//! A table readied on the target before its lane starts: created or brought to its shape,
//! the source's indexes mirrored where the table is already replicated, and its shape
//! version recorded, all in one transaction ([`PgSink::prepare_table`]). The writer follows
//! later changes in-stream by the same version rule ([`crate::state::next_version`]).

use sea_orm::sqlx::{self, PgConnection};

use super::{ddl, reshape, PgSink};
use crate::config::{LockWait, OnDropColumn};
use crate::error::{Error, Result, Side};
use crate::model::{Position, TableModel};
use crate::state::{self, StateKey};

/// What [`PgSink::prepare_table`] needs to know of one table.
pub struct PrepareTable<'a> {
    /// What the table becomes on the target (its schema among it).
    pub map: &'a crate::sink::postgres::map::TableMap,
    pub key: &'a StateKey,
    /// The shape the target is brought to (the source's, mapped by `map`), its version set.
    pub model: &'a TableModel,
    /// The shape recorded last (`sluice.schema_history`), if any.
    pub recorded: Option<&'a TableModel>,
    /// The stored position the table resumes after.
    pub start: Option<&'a Position>,
    /// An initial load's primary key is deferred.
    pub deferred_key: bool,
    pub on_drop: OnDropColumn,
    /// `model` is a shape recorded earlier that the source's stream starts in: an existing
    /// table is left as it is.
    pub follow_later: bool,
    /// Mirror the source's secondary indexes now: `Some(unique)`, unique ones as unique
    /// constraints checked at commit when the target follows source transactions.
    pub sync_indexes: Option<bool>,
    pub lock_wait: LockWait,
}

impl PgSink {
    /// Creates the table or brings it to `t.model`, mirrors its indexes when asked, and
    /// records the shape when its version is new: in one transaction.
    pub async fn prepare_table(conn: &mut PgConnection, t: PrepareTable<'_>) -> Result<()> {
        let raw = |sql: &'static str| sqlx::raw_sql(sql);
        raw("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Target, "BEGIN", &e))?;
        // The target's terms; the source's shape is what is recorded.
        let (model, recorded) = (t.map.model(t.model), t.recorded.map(|r| t.map.model(r)));
        let schema = t.map.schema.as_str();
        let mut ran = ddl::ensure_table(
            conn,
            schema,
            &model,
            t.deferred_key,
            ddl::Follow {
                old: recorded.as_ref(),
                on_drop: t.on_drop,
                wait: t.lock_wait,
                later: t.follow_later,
            },
        )
        .await?;
        if let Some(unique) = t.sync_indexes {
            ran.extend(
                reshape::sync_indexes(conn, schema, &model, unique, t.lock_wait, None).await?,
            );
        }
        if t.recorded.is_none_or(|r| r.version != t.model.version) {
            state::record_shape(conn, t.key, t.model, t.start, &ran, t.map.description()).await?;
        }
        raw("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Target, "COMMIT", &e))?;
        Ok(())
    }
}
