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

/// Creates the target table from the source schema when it is missing; when it exists,
/// checks it has the same columns in the same order, types that hold every source value
/// ([`target_type_accepts`]), no NOT NULL where the source allows NULL, and a unique key on
/// the primary key (unless `key_deferred`: an initial load dropped it, see [`defer_key`]).
pub async fn ensure_table(
    conn: &mut PgConnection,
    target_schema: &str,
    t: &TableModel,
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
    for (c, (_, have_type, not_null)) in t.columns.iter().zip(&existing) {
        if !target_type_accepts(c, have_type) {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{}: column {:?} has type {have_type}, which cannot hold every value of source column {:?} ({}); it needs {} (or a documented wider type). Fix it with ALTER TABLE {name} ALTER COLUMN {} TYPE {}, or drop the target table to let sluice create it",
                t.name,
                c.name,
                c.name,
                c.source_type,
                pg_type(c),
                quote(&c.name),
                pg_type(c)
            )));
        }
        if *not_null && c.nullable {
            return Err(Error::Schema(format!(
                "target table {target_schema}.{}: column {:?} is NOT NULL but source column {:?} ({}) allows NULL; fix it with ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL",
                t.name,
                c.name,
                c.name,
                c.source_type,
                quote(&c.name)
            )));
        }
        if *not_null && c.null_on_zero_date {
            tracing::warn!(
                table = %t.name,
                column = %c.name,
                "the target column is NOT NULL, so a zero date (which arrives as NULL under [source] zero_dates = \"null\") would be refused there as a bad row; ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL if the source may hold zero dates",
                quote(&c.name)
            );
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
            pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// `ON CONFLICT (pk)` action of an upsert: every non-key column takes the new value (or
/// nothing to do when all columns are the key).
pub fn conflict_action(table: &TableModel) -> String {
    let updates: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.primary_key.contains(i))
        .map(|(_, c)| format!("{q} = EXCLUDED.{q}", q = quote(&c.name)))
        .collect();
    if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    }
}
