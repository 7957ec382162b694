//! Target tables: created from the table model when missing, checked when they exist.

use sea_orm::sqlx::{self, AssertSqlSafe, PgConnection};

use super::types::{pg_type, qualified, quote, target_type_accepts};
use crate::error::{on_target as tgt, Error, Result};
use crate::model::TableModel;

/// PostgreSQL truncates identifiers past 63 bytes: the target would silently get another
/// name (and two long names could collide). Refuses such names.
pub fn check_names(t: &TableModel) -> Result<()> {
    for n in std::iter::once(t.name.as_str()).chain(t.columns.iter().map(|c| c.name.as_str())) {
        if n.len() > 63 {
            return Err(Error::Schema(format!(
                "table {:?}: the name {n:?} is {} bytes long, and PostgreSQL truncates identifiers past 63 bytes; rename it on the source, or replicate a view with a shorter name",
                t.name,
                n.len()
            )));
        }
    }
    Ok(())
}

/// How [`ensure_table`] follows changes of the source table on an existing target table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Follow<'a> {
    /// The shape recorded for the table (`sluice.schema_history`), `None` when there is none.
    pub old: Option<&'a TableModel>,
    pub on_drop: crate::config::OnDropColumn,
    pub wait: super::lock::LockWait,
    /// The model is a shape recorded earlier that the source's stream starts in: an existing
    /// table is left as it is (the stream brings the changes since, in order).
    pub later: bool,
}

/// Creates the target table from the source schema when it is missing. When it exists,
/// brings it to `t` as a schema change would (see [`reshape`](super::reshape) and [`Follow`]) and checks it: every column present
/// with a type that holds every source value ([`target_type_accepts`]), no NOT NULL where the
/// source allows NULL, columns of its own only when they can be left out of inserts, and a
/// unique key on the primary key (unless `key_deferred`: an initial load dropped it, see
/// [`defer_key`](super::initial_load::defer_key)). Runs in the caller's transaction; returns
/// the statements it ran (none, or the creation, or the change).
pub async fn ensure_table(
    conn: &mut PgConnection,
    target_schema: &str,
    t: &TableModel,
    key_deferred: bool,
    follow: Follow<'_>,
) -> Result<Vec<String>> {
    let Follow {
        old,
        on_drop,
        wait,
        later: follow_later,
    } = follow;
    let existing = super::reshape::target_columns(conn, target_schema, &t.name).await?;
    let name = qualified(target_schema, &t.name);
    if follow_later && !existing.is_empty() {
        // The source's changes since `t` arrive in order with the stream, and the target
        // follows them then (someone may have changed it ahead, as a stop told them to).
        return Ok(Vec::new());
    }
    if existing.is_empty() {
        let mut cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    quote(&c.name),
                    pg_type(c),
                    if c.may_be_null() { "" } else { " NOT NULL" }
                )
            })
            .collect();
        cols.push(format!(
            "PRIMARY KEY ({})",
            t.primary_key
                .iter()
                .map(|&i| quote(&t.columns[i].name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {name} ({})",
            quote(target_schema),
            cols.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await
            .map_err(tgt(format!(
                "creating target table {target_schema}.{}",
                t.name
            )))?;
        tracing::info!(table = %t.name, target = %format!("{target_schema}.{}", t.name), "created target table");
        return Ok(vec![sql]);
    }
    let change = super::reshape::plan(&name, &existing, old, t, on_drop)?;
    for note in &change.notes {
        tracing::warn!(table = %t.name, "{note}");
    }
    for sql in &change.statements {
        super::lock::ddl_until_done(conn, &name, sql, "a schema change", wait, None).await?;
    }
    if !change.statements.is_empty() {
        tracing::info!(table = %t.name, statements = ?change.statements, "the source table changed shape while sluice was stopped; the target follows");
    }
    let existing = super::reshape::target_columns(conn, target_schema, &t.name).await?;
    for c in &t.columns {
        let Some(have) = existing.iter().find(|h| h.name == c.name) else {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{} has no column {:?}, which source table {:?} has; add it (ALTER TABLE {name} ADD COLUMN {} {}), or drop the target table to let sluice create it",
                t.name, c.name, t.name, quote(&c.name), pg_type(c)
            )));
        };
        let (have_type, not_null) = (&have.ty, have.not_null);
        if not_null && c.nullable {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{}: column {:?} is NOT NULL but source column {:?} ({}) allows NULL; fix it with ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL",
                t.name,
                c.name,
                c.name,
                c.source_type,
                quote(&c.name)
            )));
        }
        if not_null && c.null_on_zero_date {
            tracing::warn!(
                table = %t.name,
                column = %c.name,
                "the target column is NOT NULL, so a zero date (which arrives as NULL under [source] zero_dates = \"null\") would be refused there as a bad row; ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL if the source may hold zero dates",
                quote(&c.name)
            );
        }
        debug_assert!(target_type_accepts(c, have_type));
    }
    for h in existing.iter().filter(|h| t.column(&h.name).is_none()) {
        if h.not_null && !h.has_default {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{} has column {:?}, which source table {:?} does not have, and it is NOT NULL without a default, so no row sluice writes could go in; drop it, or ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL",
                t.name, h.name, t.name, quote(&h.name)
            )));
        }
    }
    let statements = change.statements;
    if key_deferred {
        return Ok(statements);
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
            pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(statements)
}

/// `ON CONFLICT (pk)` action of an upsert: every non-key column takes the new value (or
/// nothing to do when all columns are the key).
pub fn conflict_action(table: &TableModel) -> String {
    let updates = set_non_key(table, "EXCLUDED");
    if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    }
}

/// `col = {from}.col` for every column outside the primary key, quoted.
pub fn set_non_key(table: &TableModel, from: &str) -> Vec<String> {
    table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.primary_key.contains(i))
        .map(|(_, c)| format!("{q} = {from}.{q}", q = quote(&c.name)))
        .collect()
}
