//! Following a source table's schema change on the target: what the target table has, what
//! the new shape needs, and the statements between the two.
//!
//! The statements are derived from the target's catalog (not from the shape the sink had
//! before), so applying a change is idempotent: a transaction that rolled back, or a restart
//! after it committed, derives the same statements, or none.
//!
//! | source change                               | target statement                          |
//! |---------------------------------------------|-------------------------------------------|
//! | ADD COLUMN (any position)                   | `ADD COLUMN` (at the end) with the source's default, so existing rows get what the source's got |
//! | a wider type (INT → BIGINT, more DECIMAL digits, more fractional seconds, FLOAT → DOUBLE) | `ALTER COLUMN … TYPE`, unless the target's type already holds it (VARCHAR(10) → VARCHAR(200) is `text` both times: nothing) |
//! | NOT NULL dropped                            | `ALTER COLUMN … DROP NOT NULL`            |
//! | RENAME COLUMN                               | `RENAME COLUMN`                           |
//! | DROP COLUMN, `on_drop_column = "keep"`      | `DROP NOT NULL`, `DROP DEFAULT`: the column stays and receives NULL |
//! | DROP COLUMN, `on_drop_column = "drop"`      | `DROP COLUMN`                             |
//! | a narrower or different type, a new primary key | none: the table stops, saying how to go on |

use sea_orm::sqlx::{self, PgConnection};

use super::types::{pg_type, quote, target_type_accepts};
use crate::config::OnDropColumn;
use crate::error::{on_target as tgt, Error, Result};
use crate::model::{Column, Kind, TableModel};

/// One column of the target table, from its catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetColumn {
    pub name: String,
    /// As `format_type` prints it.
    pub ty: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// The target table's columns in order (empty when it does not exist).
pub async fn target_columns(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<TargetColumn>> {
    let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(tgt(format!(
        "reading the columns of target table {schema}.{table}"
    )))?;
    Ok(rows
        .into_iter()
        .map(|(name, ty, not_null, has_default)| TargetColumn {
            name,
            ty,
            not_null,
            has_default,
        })
        .collect())
}

/// Whether every value of a column of kind `old` is a value of kind `new`, unchanged: a
/// change the source made without rewriting a value.
pub fn is_widening(old: Kind, new: Kind) -> bool {
    use Kind::*;
    let int_digits = |k: Kind| match k {
        Bool => Some(1),
        Int { bytes: 1 } | UInt { bytes: 1 } | Year => Some(3),
        Int { bytes: 2 } | UInt { bytes: 2 } => Some(5),
        Int { bytes: 3 } | UInt { bytes: 3 } => Some(8),
        Int { bytes: 4 } | UInt { bytes: 4 } => Some(10),
        Int { .. } => Some(19),
        UInt { .. } => Some(20),
        _ => None,
    };
    match (old, new) {
        (a, b) if a == b => true,
        (Bool, Int { .. } | UInt { .. }) => true,
        (Int { bytes: a }, Int { bytes: b }) | (UInt { bytes: a }, UInt { bytes: b }) => b >= a,
        (UInt { bytes: a }, Int { bytes: b }) => b > a,
        (Year, Int { bytes: b }) => b >= 2,
        (Year, UInt { bytes: b }) => b >= 2,
        (Bool | Int { .. } | UInt { .. } | Year, Decimal { precision, scale }) => {
            // A negative value needs a signed target; Decimal is signed.
            int_digits(old).is_some_and(|d| precision.saturating_sub(scale) >= d)
        }
        (
            Decimal {
                precision: p,
                scale: s,
            },
            Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s2 >= s && p2.saturating_sub(s2) >= p.saturating_sub(s),
        (Float32, Float64) => true,
        (Text | Enum | Set, Text) | (Enum, Enum) | (Set, Set) => true,
        (DateTime { fsp: a }, DateTime { fsp: b })
        | (Timestamp { fsp: a }, Timestamp { fsp: b })
        | (Time { fsp: a }, Time { fsp: b }) => b >= a,
        (Date, DateTime { .. }) => true,
        _ => false,
    }
}

/// What rows that existed before `c` was added hold on the source, as a PostgreSQL
/// expression of its target type; `None`: NULL (no default, a NULL default, a zero date, or
/// an expression such as `current_timestamp()` whose value at the ALTER the target cannot
/// know: the second element says so).
pub fn default_expr(c: &Column) -> (Option<String>, Option<String>) {
    let ty = pg_type(c);
    let lit = |s: &str| format!("'{}'::{ty}", s.replace('\'', "''"));
    let zero_date = |s: &str| s.starts_with("0000-00-00") || s.contains("-00");
    let raw = match c.default.as_deref() {
        None | Some("NULL") if c.nullable => return (None, None),
        // A NOT NULL column added without a default: the source fills the type's own.
        None | Some("NULL") => {
            return match c.kind {
                Kind::Bool => (Some("false".into()), None),
                Kind::Int { .. }
                | Kind::UInt { .. }
                | Kind::Decimal { .. }
                | Kind::Float32
                | Kind::Float64
                | Kind::Year => (Some(format!("0::{ty}")), None),
                Kind::Text | Kind::Set => (Some(lit("")), None),
                Kind::Enum => {
                    let first = crate::model::parse_labels(&c.source_type)
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    (Some(lit(&first)), None)
                }
                Kind::Time { .. } => (Some(lit("00:00:00")), None),
                Kind::Bits(n) => (Some(format!("B'{}'", "0".repeat(n as usize))), None),
                Kind::Bytes if !c.source_type.to_ascii_lowercase().starts_with("binary") => {
                    (Some("'\\x'::bytea".into()), None)
                }
                // Zero dates, BINARY(n) zero bytes, JSON: NULL, said.
                _ => (
                    None,
                    Some(format!(
                        "rows that existed before column {:?} was added get NULL on the target (the source gave them its type's implicit default, which the target cannot hold as is)",
                        c.name
                    )),
                ),
            };
        }
        Some(d) => d,
    };
    if let Some(body) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        let s = body.replace("''", "'");
        return match c.kind {
            Kind::Bool => (
                Some(if s.trim() == "0" { "false" } else { "true" }.into()),
                None,
            ),
            k if k.is_date() && zero_date(&s) => (None, None),
            Kind::Bytes => (
                None,
                Some(format!(
                    "rows that existed before column {:?} was added get NULL on the target: its binary default {raw} is not copied",
                    c.name
                )),
            ),
            _ => (Some(lit(&s)), None),
        };
    }
    let numeric = !raw.is_empty()
        && raw
            .chars()
            .all(|ch| ch.is_ascii_digit() || matches!(ch, '-' | '+' | '.' | 'e' | 'E'));
    if numeric {
        return match c.kind {
            Kind::Bool => (
                Some(if raw.trim() == "0" { "false" } else { "true" }.into()),
                None,
            ),
            _ => (Some(lit(raw)), None),
        };
    }
    if let (Kind::Bits(n), Some(bits)) = (
        c.kind,
        raw.strip_prefix("b'").and_then(|r| r.strip_suffix('\'')),
    ) {
        return (
            Some(format!("B'{bits:0>width$}'", width = n as usize)),
            None,
        );
    }
    (
        None,
        Some(format!(
            "rows that existed before column {:?} was added get NULL on the target: its default is an expression ({raw}) whose value at the ALTER sluice cannot know; `sluice verify --table <table> --repair` copies the source's values",
            c.name
        )),
    )
}

/// The length of a `char(n)` / `varchar(n)` type (`u64::MAX` for other text types).
fn text_length(source_type: &str) -> u64 {
    let t = source_type.to_ascii_lowercase();
    t.strip_prefix("varchar(")
        .or_else(|| t.strip_prefix("char("))
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// What the target needs for the table to hold rows of `new`.
#[derive(Debug, Default, PartialEq)]
pub struct Reshape {
    /// Statements to run, in order (through [`super::lock::ddl`]).
    pub statements: Vec<String>,
    /// Things to say (at warn): values the target could not be given.
    pub notes: Vec<String>,
}

/// The statements that bring target table `target` (qualified), whose columns are `have`,
/// to `new`. `old` is the shape the sink wrote in until now (`None` at start): only its
/// columns are ever dropped, and only its columns' types count as the source's old types.
/// Refuses (the table then stops) a change that could lose or mangle data, saying how to go
/// on.
pub fn plan(
    target: &str,
    have: &[TargetColumn],
    old: Option<&TableModel>,
    new: &TableModel,
    on_drop: OnDropColumn,
) -> Result<Reshape> {
    let mut out = Reshape::default();
    let mut have: Vec<TargetColumn> = have.to_vec();
    let table = &new.name;
    let stop = |what: String, fix: String| {
        Error::Schema(format!(
            "table {table:?}: {what}, which sluice does not follow because it could lose or mangle data; the table stops (the others go on). To go on: {fix}, then restart sluice (`sluice verify --table {table} --repair` afterwards brings rows the source rewrote in line)"
        ))
    };
    if let Some(old) = old {
        let names = |m: &TableModel| -> Vec<String> {
            m.primary_key
                .iter()
                .map(|&i| m.columns[i].name.clone())
                .collect()
        };
        let (ok, nk) = (names(old), names(new));
        let renamed: Vec<String> = ok
            .iter()
            .map(|n| {
                new.columns
                    .iter()
                    .find(|c| c.renamed_from.as_deref() == Some(n.as_str()))
                    .map_or_else(|| n.clone(), |c| c.name.clone())
            })
            .collect();
        if renamed != nk {
            return Err(stop(
                format!(
                    "its primary key changed on the source from ({}) to ({})",
                    ok.join(", "),
                    nk.join(", ")
                ),
                format!("give the target table {target} the same primary key (ALTER TABLE {target} DROP CONSTRAINT …, ADD PRIMARY KEY (…)), or drop the target table and delete its row from sluice.replication_state to copy it again"),
            ));
        }
    }
    // Renames first, so the columns below are found by their new names.
    for c in &new.columns {
        let Some(from) = c.renamed_from.as_deref() else {
            continue;
        };
        let has = |n: &str| have.iter().any(|h| h.name == n);
        if has(from) && !has(&c.name) {
            out.statements.push(format!(
                "ALTER TABLE {target} RENAME COLUMN {} TO {}",
                quote(from),
                quote(&c.name)
            ));
            if let Some(h) = have.iter_mut().find(|h| h.name == from) {
                h.name = c.name.clone();
            }
        }
    }
    for c in &new.columns {
        let col = quote(&c.name);
        let Some(h) = have.iter().find(|h| h.name == c.name) else {
            let (default, note) = default_expr(c);
            out.notes.extend(note);
            let not_null = default.is_some() && !c.may_be_null();
            out.statements.push(format!(
                "ALTER TABLE {target} ADD COLUMN {col} {}{}{}",
                pg_type(c),
                default.map(|d| format!(" DEFAULT {d}")).unwrap_or_default(),
                if not_null { " NOT NULL" } else { "" }
            ));
            continue;
        };
        let was = old
            .and_then(|o| {
                o.columns.iter().find(|oc| {
                    oc.name == c.name || c.renamed_from.as_deref() == Some(oc.name.as_str())
                })
            })
            .map(|oc| (oc.kind, oc.source_type.clone()));
        // A narrower or different type: the source rewrote its values (clamped, truncated,
        // converted) without a row event. Unless the target column already has exactly the
        // new type (someone changed it to go on), the table stops.
        if let Some((kind, source_type)) = &was {
            if !is_widening(*kind, c.kind) && h.ty != pg_type(c) {
                return Err(stop(
                    format!(
                        "column {:?} changed on the source from {source_type} to {} (target column: {})",
                        c.name, c.source_type, h.ty
                    ),
                    format!(
                        "change the target column to the new type yourself: ALTER TABLE {target} ALTER COLUMN {col} TYPE {} USING …",
                        pg_type(c)
                    ),
                ));
            }
            if kind == &c.kind && text_length(&c.source_type) < text_length(source_type) {
                out.notes.push(format!(
                    "column {:?} became shorter on the source ({source_type} to {}): values the source cut short keep their full length on the target until `sluice verify --table {} --repair`",
                    c.name, c.source_type, new.name
                ));
            }
        }
        if !target_type_accepts(c, &h.ty) {
            match &was {
                Some((kind, _)) if is_widening(*kind, c.kind) => {
                    let using = match kind {
                        Kind::Bool => format!("({col}::integer)::{}", pg_type(c)),
                        _ => format!("{col}::{}", pg_type(c)),
                    };
                    out.statements.push(format!(
                        "ALTER TABLE {target} ALTER COLUMN {col} TYPE {} USING {using}",
                        pg_type(c)
                    ));
                }
                _ => {
                    return Err(Error::Schema(format!(
                        "target table {target}: column {:?} has type {}, which cannot hold every value of source column {:?} ({}); it needs {} (or a documented wider type). Fix it with ALTER TABLE {target} ALTER COLUMN {col} TYPE {}, or drop the target table to let sluice create it",
                        c.name, h.ty, c.name, c.source_type, pg_type(c), pg_type(c)
                    )))
                }
            }
        }
        if h.not_null && c.may_be_null() && old.is_some() {
            out.statements.push(format!(
                "ALTER TABLE {target} ALTER COLUMN {col} DROP NOT NULL"
            ));
        }
    }
    // Columns the source no longer has: only those sluice wrote (the old shape's).
    if let Some(old) = old {
        for h in &have {
            let gone = !new.columns.iter().any(|c| c.name == h.name)
                && old.columns.iter().any(|c| c.name == h.name);
            if !gone {
                continue;
            }
            let col = quote(&h.name);
            match on_drop {
                OnDropColumn::Drop => {
                    out.statements
                        .push(format!("ALTER TABLE {target} DROP COLUMN {col}"));
                }
                OnDropColumn::Keep => {
                    if h.not_null {
                        out.statements.push(format!(
                            "ALTER TABLE {target} ALTER COLUMN {col} DROP NOT NULL"
                        ));
                    }
                    if h.has_default {
                        out.statements.push(format!(
                            "ALTER TABLE {target} ALTER COLUMN {col} DROP DEFAULT"
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The target's name for source index `index` of `table`: `<table>_<index>`, shortened with
/// a hash of the whole past PostgreSQL's 63 bytes.
pub fn index_name(table: &str, index: &str) -> String {
    let full = format!("{table}_{index}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = 54;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &full[..cut], hash as u32)
}

/// How an index sluice made is marked (`COMMENT ON INDEX`): what it mirrors, so that a
/// changed source index is rebuilt and sluice never touches indexes of the target's own.
fn index_comment(i: &crate::model::Index, unique: bool) -> String {
    format!(
        "sluice: source index {}{} ({})",
        i.name,
        if unique { " UNIQUE" } else { "" },
        i.columns.join(", ")
    )
}

/// What the target's indexes lack of the source's: sluice's indexes to drop (their source
/// index is gone or changed), and the source indexes to build, with their target names.
struct IndexPlan<'m> {
    target: String,
    drop: Vec<String>,
    build: Vec<(String, &'m crate::model::Index)>,
}

async fn index_plan<'m>(
    tx: &mut PgConnection,
    schema: &str,
    model: &'m TableModel,
    unique: bool,
) -> Result<IndexPlan<'m>> {
    let target = super::types::qualified(schema, &model.name);
    let have: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, obj_description(c.oid, 'pg_class') FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = $2 AND i.indisvalid \
           AND obj_description(c.oid, 'pg_class') LIKE 'sluice: source index %'",
    )
    .bind(schema)
    .bind(&model.name)
    .fetch_all(&mut *tx)
    .await
    .map_err(tgt(format!("reading the indexes of {target}")))?;
    // Indexes of the target's own (not sluice's), as column lists: one on the same columns
    // already serves (nothing is added beside it).
    let own: Vec<(Vec<String>, bool)> = sqlx::query_as(
        "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o) \
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o), \
                i.indisunique \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = $2 AND i.indexprs IS NULL AND i.indpred IS NULL \
           AND NOT i.indisprimary AND i.indisvalid \
           AND COALESCE(obj_description(c.oid, 'pg_class'), '') NOT LIKE 'sluice: source index %'",
    )
    .bind(schema)
    .bind(&model.name)
    .fetch_all(&mut *tx)
    .await
    .map_err(tgt(format!("reading the indexes of {target}")))?;
    // Indexes left invalid (a `CREATE INDEX CONCURRENTLY` that did not finish: the process
    // stopped during it), and whether one is being built right now (by another process).
    let invalid: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, EXISTS (SELECT 1 FROM pg_stat_progress_create_index p \
                                         WHERE p.index_relid = c.oid) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = $2 AND NOT i.indisvalid",
    )
    .bind(schema)
    .bind(&model.name)
    .fetch_all(&mut *tx)
    .await
    .map_err(tgt(format!("reading the indexes of {target}")))?;
    let drop_sql = |name: &str| {
        format!(
            "ALTER TABLE {target} DROP CONSTRAINT IF EXISTS {q}; DROP INDEX IF EXISTS {}.{q}",
            quote(schema),
            q = quote(name)
        )
    };
    let wanted: Vec<(String, &crate::model::Index)> = model
        .indexes
        .iter()
        .map(|i| (index_name(&model.name, &i.name), i))
        .collect();
    let mut plan = IndexPlan {
        target: target.clone(),
        drop: Vec::new(),
        build: Vec::new(),
    };
    for (name, comment) in &have {
        let keep = wanted.iter().any(|(n, i)| {
            n == name
                && (*comment == index_comment(i, unique && i.unique)
                    || *comment == index_comment(i, false))
        });
        if !keep {
            plan.drop.push(drop_sql(name));
        }
    }
    for (name, i) in wanted {
        let exists = have.iter().any(|(n, c)| {
            *n == name
                && (*c == index_comment(i, unique && i.unique) || *c == index_comment(i, false))
        });
        let served = own
            .iter()
            .any(|(cols, u)| *cols == i.columns && (*u || !(unique && i.unique)));
        match invalid.iter().find(|(n, _)| *n == name) {
            // Another session builds it: it ends valid there.
            Some((_, true)) => continue,
            Some((_, false)) => plan.drop.push(drop_sql(&name)),
            None => {}
        }
        if !(exists || served) {
            plan.build.push((name, i));
        }
    }
    Ok(plan)
}

/// The comment that marks index `q` as sluice's (see [`index_comment`]).
fn mark(schema: &str, q: &str, i: &crate::model::Index, unique: bool) -> String {
    format!(
        "COMMENT ON INDEX {}.{q} IS '{}'",
        quote(schema),
        index_comment(i, unique).replace('\'', "''")
    )
}

fn index_columns(i: &crate::model::Index) -> String {
    i.columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gives target table `table` (in `schema`) the source's secondary indexes of `model`, and
/// drops those sluice made for source indexes that are gone; indexes of the target's own are
/// left alone. `unique`: a unique source index becomes a unique constraint checked at commit
/// (`DEFERRABLE INITIALLY DEFERRED`), so a source transaction that swaps unique values
/// between rows applies; else (polling, whose reads are not transactions of the source)
/// every index is a plain one. A unique index the target's rows do not satisfy becomes a
/// plain one, said at warn. Runs in the caller's transaction; returns the statements run.
pub async fn sync_indexes(
    tx: &mut PgConnection,
    schema: &str,
    model: &TableModel,
    unique: bool,
    wait: super::lock::LockWait,
    counted: Option<&crate::telemetry::TableHandle>,
) -> Result<Vec<String>> {
    let plan = index_plan(tx, schema, model, unique).await?;
    let target = plan.target;
    let mut ran = Vec::new();
    for sql in plan.drop {
        super::lock::ddl_until_done(tx, &target, &sql, "dropping an index", wait, counted).await?;
        ran.push(sql);
    }
    for (name, i) in plan.build {
        let cols = index_columns(i);
        let q = quote(&name);
        let plain = format!("CREATE INDEX {q} ON {target} ({cols})");
        let mut made_unique = false;
        if unique && i.unique {
            let sql = format!(
                "CREATE UNIQUE INDEX {q} ON {target} ({cols}); \
                 ALTER TABLE {target} ADD CONSTRAINT {q} UNIQUE USING INDEX {q} DEFERRABLE INITIALLY DEFERRED"
            );
            raw(tx, "SAVEPOINT sluice_index").await?;
            match super::lock::ddl_until_done(tx, &target, &sql, "creating an index", wait, counted)
                .await
            {
                Ok(()) => {
                    raw(tx, "RELEASE SAVEPOINT sluice_index").await?;
                    ran.push(sql);
                    made_unique = true;
                }
                Err(e) if e.sqlstate() == Some("23505") => {
                    raw(tx, "ROLLBACK TO SAVEPOINT sluice_index").await?;
                    tracing::warn!(table = %model.name, index = %i.name, error = %e, "the target's rows do not satisfy the source's unique index, so it is mirrored as a plain index; `sluice verify --table {} --repair` finds the rows that differ", model.name);
                }
                Err(e) => return Err(e),
            }
        }
        if !made_unique {
            super::lock::ddl_until_done(tx, &target, &plain, "creating an index", wait, counted)
                .await?;
            ran.push(plain);
        }
        raw(tx, &mark(schema, &q, i, made_unique)).await?;
    }
    if !ran.is_empty() {
        tracing::info!(table = %model.name, statements = ?ran, "the target's indexes follow the source's");
    }
    Ok(ran)
}

/// As [`sync_indexes`], on connection `conn` of its own and outside any transaction: each
/// index built with `CREATE INDEX CONCURRENTLY`, so the table's writes (and every other
/// table's, in the same lane) go on meanwhile. For a table copied beside the stream, whose
/// indexes wait for the end of its copy. An index whose build fails is dropped again (a
/// concurrent build that fails leaves an invalid index) and the error returned; one left
/// invalid by a process that stopped during its build is dropped and built again by the
/// next [`sync_indexes`] or build.
pub async fn build_indexes_concurrently(
    conn: &mut PgConnection,
    schema: &str,
    model: &TableModel,
    unique: bool,
    wait: super::lock::LockWait,
    counted: Option<&crate::telemetry::TableHandle>,
) -> Result<Vec<String>> {
    let plan = index_plan(conn, schema, model, unique).await?;
    let target = plan.target;
    let mut ran = Vec::new();
    // Short statements, each in a transaction of its own (the lock waits retry there).
    async fn in_tx(
        conn: &mut PgConnection,
        target: &str,
        sql: &str,
        what: &str,
        wait: super::lock::LockWait,
        counted: Option<&crate::telemetry::TableHandle>,
    ) -> Result<()> {
        raw(conn, "BEGIN").await?;
        let r = super::lock::ddl_until_done(conn, target, sql, what, wait, counted).await;
        raw(conn, if r.is_ok() { "COMMIT" } else { "ROLLBACK" }).await?;
        r
    }
    for sql in plan.drop {
        in_tx(conn, &target, &sql, "dropping an index", wait, counted).await?;
        ran.push(sql);
    }
    for (name, i) in plan.build {
        let cols = index_columns(i);
        let q = quote(&name);
        let dropped = format!("DROP INDEX CONCURRENTLY IF EXISTS {}.{q}", quote(schema));
        let build =
            |kind: &str| format!("CREATE {kind}INDEX CONCURRENTLY {q} ON {target} ({cols})");
        let started = std::time::Instant::now();
        let mut made_unique = false;
        if unique && i.unique {
            let sql = build("UNIQUE ");
            match raw(conn, &sql).await {
                Ok(()) => {
                    let constraint = format!(
                        "ALTER TABLE {target} ADD CONSTRAINT {q} UNIQUE USING INDEX {q} DEFERRABLE INITIALLY DEFERRED"
                    );
                    let made = in_tx(
                        conn,
                        &target,
                        &constraint,
                        "creating an index",
                        wait,
                        counted,
                    )
                    .await;
                    // Not left behind unmarked (it would pass for an index of the target's
                    // own): dropped, so the next start builds it again.
                    if let Err(e) = made {
                        let _ = raw(conn, &dropped).await;
                        return Err(e);
                    }
                    ran.push(sql);
                    ran.push(constraint);
                    made_unique = true;
                }
                Err(e) => {
                    raw(conn, &dropped).await?;
                    if e.sqlstate() != Some("23505") {
                        return Err(e);
                    }
                    tracing::warn!(table = %model.name, index = %i.name, error = %e, "the target's rows do not satisfy the source's unique index, so it is mirrored as a plain index; `sluice verify --table {} --repair` finds the rows that differ", model.name);
                }
            }
        }
        if !made_unique {
            let sql = build("");
            if let Err(e) = raw(conn, &sql).await {
                let _ = raw(conn, &dropped).await;
                return Err(e);
            }
            ran.push(sql);
        }
        raw(conn, &mark(schema, &q, i, made_unique)).await?;
        tracing::info!(table = %model.name, index = %name, seconds = format!("{:.2}", started.elapsed().as_secs_f64()), "index built beside the stream (CREATE INDEX CONCURRENTLY)");
    }
    Ok(ran)
}

async fn raw(tx: &mut PgConnection, sql: &str) -> Result<()> {
    sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await
        .map(|_| ())
        .map_err(tgt(format!("{sql} on the target")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: Kind, source_type: &str) -> Column {
        Column::new(name, source_type, kind)
    }

    fn model(columns: Vec<Column>) -> TableModel {
        TableModel {
            name: "t".into(),
            columns,
            primary_key: vec![0],
            indexes: vec![],
            version: 1,
        }
    }

    fn have(m: &TableModel) -> Vec<TargetColumn> {
        m.columns
            .iter()
            .map(|c| TargetColumn {
                name: c.name.clone(),
                ty: pg_type(c),
                not_null: !c.may_be_null(),
                has_default: false,
            })
            .collect()
    }

    const T: &str = "\"public\".\"t\"";

    #[test]
    fn additions_widenings_renames_and_drops_become_statements() {
        let id = || {
            let mut c = col("id", Kind::Int { bytes: 4 }, "int(11)");
            c.nullable = false;
            c
        };
        let old = model(vec![
            id(),
            col("n", Kind::Int { bytes: 4 }, "int(11)"),
            col("name", Kind::Text, "varchar(10)"),
            col("gone", Kind::Text, "text"),
            col("a", Kind::Text, "text"),
        ]);
        let mut added = col("added", Kind::Int { bytes: 4 }, "int(11)");
        added.nullable = false;
        added.default = Some("7".into());
        let mut b = col("b", Kind::Text, "text");
        b.renamed_from = Some("a".into());
        let new = model(vec![
            id(),
            added,
            col("n", Kind::Int { bytes: 8 }, "bigint(20)"),
            col("name", Kind::Text, "varchar(200)"),
            b,
        ]);
        let r = plan(T, &have(&old), Some(&old), &new, OnDropColumn::Drop).unwrap();
        assert_eq!(
            r.statements,
            vec![
                format!("ALTER TABLE {T} RENAME COLUMN \"a\" TO \"b\""),
                format!(
                    "ALTER TABLE {T} ADD COLUMN \"added\" integer DEFAULT '7'::integer NOT NULL"
                ),
                format!("ALTER TABLE {T} ALTER COLUMN \"n\" TYPE bigint USING \"n\"::bigint"),
                format!("ALTER TABLE {T} DROP COLUMN \"gone\""),
            ]
        );
        // Applied, the same change needs nothing more.
        let mut after = have(&new);
        after.push(TargetColumn {
            name: "x_user_column".into(),
            ty: "text".into(),
            not_null: false,
            has_default: false,
        });
        assert_eq!(
            plan(T, &after, Some(&old), &new, OnDropColumn::Drop).unwrap(),
            Reshape::default()
        );
        // Kept: nullable, no default.
        let mut kept = have(&old);
        kept[3].not_null = true;
        kept[3].has_default = true;
        let r = plan(T, &kept, Some(&old), &new, OnDropColumn::Keep).unwrap();
        assert!(r.statements.contains(&format!(
            "ALTER TABLE {T} ALTER COLUMN \"gone\" DROP NOT NULL"
        )));
        assert!(r.statements.contains(&format!(
            "ALTER TABLE {T} ALTER COLUMN \"gone\" DROP DEFAULT"
        )));
    }

    #[test]
    fn narrowing_and_new_keys_stop_the_table_saying_how_to_go_on() {
        let old = model(vec![
            col("id", Kind::Int { bytes: 8 }, "bigint(20)"),
            col("v", Kind::Text, "text"),
        ]);
        let new = model(vec![
            col("id", Kind::Int { bytes: 8 }, "bigint(20)"),
            col("v", Kind::Int { bytes: 4 }, "int(11)"),
        ]);
        let e = plan(T, &have(&old), Some(&old), &new, OnDropColumn::Keep)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"v\" changed on the source from text to int(11)"),
            "{e}"
        );
        assert!(e.contains("ALTER TABLE"), "{e}");
        // Narrower: stops, though the target would hold the values, as the source may have
        // clamped some; once the target column has the new type, it goes on.
        let narrow = model(vec![
            col("id", Kind::Int { bytes: 8 }, "bigint(20)"),
            col("v", Kind::Text, "text"),
            col("w", Kind::Int { bytes: 4 }, "int(11)"),
        ]);
        let mut wide = narrow.clone();
        wide.columns[2] = col("w", Kind::Int { bytes: 8 }, "bigint(20)");
        let e = plan(T, &have(&wide), Some(&wide), &narrow, OnDropColumn::Keep).unwrap_err();
        assert!(e.to_string().contains("from bigint(20) to int(11)"), "{e}");
        let r = plan(T, &have(&narrow), Some(&wide), &narrow, OnDropColumn::Keep).unwrap();
        assert!(r.statements.is_empty());
        // A shorter VARCHAR: said, not stopped.
        let mut short = old.clone();
        short.columns[1] = col("v", Kind::Text, "varchar(5)");
        let mut long = old.clone();
        long.columns[1] = col("v", Kind::Text, "varchar(50)");
        let r = plan(T, &have(&long), Some(&long), &short, OnDropColumn::Keep).unwrap();
        assert!(
            r.statements.is_empty() && r.notes[0].contains("shorter"),
            "{r:?}"
        );
        let mut rekeyed = old.clone();
        rekeyed.primary_key = vec![1];
        let e = plan(T, &have(&old), Some(&old), &rekeyed, OnDropColumn::Keep)
            .unwrap_err()
            .to_string();
        assert!(e.contains("primary key changed"), "{e}");
    }

    #[test]
    fn defaults_are_what_old_rows_hold() {
        let mut c = col("c", Kind::Text, "varchar(20)");
        c.default = Some("'it''s'".into());
        assert_eq!(default_expr(&c).0.unwrap(), "'it''s'::text");
        c.nullable = false;
        c.default = None;
        assert_eq!(default_expr(&c).0.unwrap(), "''::text");
        let mut e = col("e", Kind::Enum, "enum('new','paid')");
        e.nullable = false;
        assert_eq!(default_expr(&e).0.unwrap(), "'new'::text");
        let mut t = col("t", Kind::Timestamp { fsp: 0 }, "timestamp");
        t.default = Some("current_timestamp()".into());
        let (d, note) = default_expr(&t);
        assert!(d.is_none() && note.unwrap().contains("expression"));
        let mut b = col("b", Kind::Bool, "tinyint(1)");
        b.default = Some("1".into());
        assert_eq!(default_expr(&b).0.unwrap(), "true");
        assert!(is_widening(Kind::Int { bytes: 4 }, Kind::Int { bytes: 8 }));
        assert!(!is_widening(Kind::Int { bytes: 8 }, Kind::Int { bytes: 4 }));
        assert!(is_widening(
            Kind::Decimal {
                precision: 10,
                scale: 2
            },
            Kind::Decimal {
                precision: 12,
                scale: 2
            }
        ));
        assert!(!is_widening(Kind::Text, Kind::Int { bytes: 8 }));
    }

    #[test]
    fn index_names_fit_postgres() {
        assert_eq!(index_name("orders", "by_created"), "orders_by_created");
        let long = index_name(&"t".repeat(40), &"i".repeat(40));
        assert!(long.len() <= 63 && long.starts_with("tttt"), "{long}");
        assert_ne!(long, index_name(&"t".repeat(40), &"j".repeat(40)));
    }
}
