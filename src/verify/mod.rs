//! `verify`: compares a table on the source and the target without pulling either into
//! memory, narrows what differs to rows, and (with `--repair`) rewrites exactly those rows.
//!
//! # How
//! 1. Every row is rendered, inside each database, to the same canonical text (integers and
//!    DECIMAL as decimal text, dates as `YYYY-MM-DD HH:MM:SS.ffffff`, binary as lowercase hex,
//!    text as UTF-8, NULL as a marker; see [`mysql_canon`] / [`pg_canon`]) and hashed with MD5.
//! 2. Rows are chunked by their primary key: chunk = the first 4 hex digits of the MD5 of
//!    the key's canonical text (65,536 chunks). Each database computes, in ONE scan, per
//!    chunk: the row count and the sum of the first 15 hex digits of every row hash (an
//!    order-independent checksum). Chunking by a hash of the key rather than by key ranges
//!    makes chunks identical on both sides whatever the collations: MySQL's default
//!    `utf8mb4_general_ci` orders text keys differently from PostgreSQL, so range
//!    boundaries would not select the same rows.
//! 3. Chunks whose count or sum differ are narrowed to rows: both sides list
//!    `(key hash, row hash)` for those chunks only, in passes of at most [`PASS_ROWS`] rows,
//!    and the lists are diffed: missing on the target, extra on the target, different.
//! 4. `--repair` re-reads the missing and different rows from the source and upserts them
//!    on the target (COPY into a temporary table, `INSERT … ON CONFLICT (pk) DO UPDATE`),
//!    deletes the extra ones by primary key, one transaction per pass, all values bound.
//!    It never touches the watermark. Afterwards the table is compared again.
//!
//! Columns whose text form differs between the two databases by design are left out of
//! the comparison and named in the report: JSON (PostgreSQL's jsonb normalises it), TIME
//! (it becomes an interval), FLOAT and DOUBLE (MySQL prints `-0.00000025` where PostgreSQL
//! prints `-2.5e-07`, and no shared exact rendering exists in both SQL dialects).

pub mod check;

use std::collections::HashMap;
use std::time::Instant;

use futures::TryStreamExt;
use sea_orm::sqlx::{self, AssertSqlSafe, Connection, MySqlConnection, PgConnection, Row as _};

use crate::config::Settings;
use crate::error::{Error, Result, Side};
use crate::model::{Kind, TableModel};
use crate::sink::postgres::copy::encode_text;
use crate::sink::postgres::ddl::conflict_action;
use crate::sink::postgres::types::{pg_type, quote as quote_pg};
use crate::source::mysql::{self, quote as quote_mysql, ReadSpec};
use crate::state::{ownership, StateKey};
use crate::value::Row;

/// Hex digits of the key hash that name a chunk: 16^4 = 65,536 chunks.
const CHUNK_HEX_DIGITS: usize = 4;
/// Rows narrowed (and repaired) per pass, at most: bounds memory.
pub const PASS_ROWS: u64 = 100_000;
/// Keys shown per kind of difference.
const SHOWN_KEYS: usize = 5;

pub use crate::telemetry::TableReport;

/// Whether column `i` takes part in the comparison.
pub(crate) fn compared(t: &TableModel, i: usize) -> bool {
    !matches!(
        t.columns[i].kind,
        Kind::Json | Kind::Time { .. } | Kind::Float32 | Kind::Float64
    )
}

/// The canonical text of column `i` in MySQL, NULL included (as `n`; values get a `v`
/// prefix so no value can look like NULL).
fn mysql_canon(spec: &ReadSpec, i: usize) -> String {
    format!("COALESCE(CONCAT('v', {}), 'n')", mysql_text(spec, i))
}

/// The canonical text of a value of column `i` in MySQL (NULL stays NULL).
fn mysql_text(spec: &ReadSpec, i: usize) -> String {
    let c = &spec.model.columns[i];
    let q = quote_mysql(&c.name);
    match c.kind {
        // Floats, JSON and TIME are not compared (see `compared`); the arms only keep the
        // match whole.
        Kind::Bool
        | Kind::Int { .. }
        | Kind::UInt { .. }
        | Kind::Decimal { .. }
        | Kind::Enum
        | Kind::Set
        | Kind::Time { .. }
        | Kind::Float32
        | Kind::Float64 => {
            format!("CAST({q} AS CHAR)")
        }
        Kind::Year => format!("CAST(CAST({q} AS SIGNED) AS CHAR)"),
        Kind::Text | Kind::Json => format!("CONVERT({q} USING utf8mb4)"),
        Kind::Bytes => format!("LOWER(HEX({q}))"),
        Kind::Bits(n) => format!("LPAD(BIN({q}), {n}, '0')"),
        Kind::Date | Kind::DateTime { .. } | Kind::Timestamp { .. } => {
            let fmt = if c.kind == Kind::Date {
                "'%Y-%m-%d'"
            } else {
                "'%Y-%m-%d %H:%i:%s.%f'"
            };
            // A zero date that arrives as NULL (zero_dates = "null", outside the keyset).
            if spec.zero_date_to_null(i) {
                format!(
                    "CASE WHEN YEAR({q}) = 0 OR MONTH({q}) = 0 OR DAYOFMONTH({q}) = 0 THEN NULL ELSE DATE_FORMAT({q}, {fmt}) END"
                )
            } else {
                format!("DATE_FORMAT({q}, {fmt})")
            }
        }
    }
}

/// A MySQL expression of column `i`'s type from a parameter holding its canonical text
/// ([`mysql_text`]): how a key read on one side is looked up on the other.
fn mysql_from_text(t: &TableModel, i: usize) -> String {
    match t.columns[i].kind {
        Kind::Bool | Kind::Int { .. } | Kind::Year => "CAST(? AS SIGNED)".into(),
        Kind::UInt { .. } => "CAST(? AS UNSIGNED)".into(),
        Kind::Decimal { precision, scale } => format!("CAST(? AS DECIMAL({precision}, {scale}))"),
        Kind::Bytes => "UNHEX(?)".into(),
        Kind::Bits(_) => "CAST(CONV(?, 2, 10) AS UNSIGNED)".into(),
        Kind::Date => "CAST(? AS DATE)".into(),
        Kind::DateTime { .. } | Kind::Timestamp { .. } => "CAST(? AS DATETIME(6))".into(),
        _ => "?".into(),
    }
}

/// The canonical text of column `i` in PostgreSQL; see [`mysql_canon`].
fn pg_canon(t: &TableModel, i: usize) -> String {
    format!(
        "COALESCE('v' || {}, 'n')",
        pg_text(t, i, &quote_pg(&t.columns[i].name))
    )
}

/// The canonical text of `q`, a value of column `i`, in PostgreSQL; see [`mysql_text`].
fn pg_text(t: &TableModel, i: usize, q: &str) -> String {
    match t.columns[i].kind {
        Kind::Bool => format!("{q}::int::text"),
        Kind::Bytes => format!("encode({q}, 'hex')"),
        Kind::Date => format!("to_char({q}, 'YYYY-MM-DD')"),
        Kind::DateTime { .. } => format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS.US')"),
        Kind::Timestamp { .. } => {
            format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
        }
        _ => format!("{q}::text"),
    }
}

/// A PostgreSQL expression of column `i`'s type from `text`, its canonical text; see
/// [`mysql_from_text`].
fn pg_from_text(t: &TableModel, i: usize, text: &str) -> String {
    let c = &t.columns[i];
    match c.kind {
        Kind::Bool => format!("({text})::int::boolean"),
        Kind::Bytes => format!("decode({text}, 'hex')"),
        Kind::Timestamp { .. } => format!("(({text}) || '+00')::timestamptz"),
        _ => format!("CAST({text} AS {})", pg_type(c)),
    }
}

/// The SQL pieces of one table on both sides.
pub(crate) struct Plan {
    my_from: String,
    pg_from: String,
    /// Key text and row text, per side.
    my_key: String,
    my_row: String,
    pg_key: String,
    pg_row: String,
    /// Per primary-key column: its canonical text in MySQL and in PostgreSQL (equal for
    /// the same key), its quoted name on each side, and the MySQL placeholder that turns a
    /// canonical text back into a value of its type.
    my_key_text: Vec<String>,
    pg_key_text: Vec<String>,
    my_pk: Vec<String>,
    pg_pk: Vec<String>,
    my_key_param: Vec<String>,
    /// What the table is on the target (`[[tables]] target`, renames, masks).
    map: crate::sink::postgres::map::TableMap,
    /// The target's model: the source's mapped.
    target: TableModel,
    /// Columns compared (masked ones as masked).
    cols: Vec<usize>,
}

impl Plan {
    /// The plan of table `ts` through its mapping, once the mapping is checked against the
    /// table as it is: a mapping naming a column the source renamed since would compare (and
    /// a repair write) its values unmasked, so it is refused, saying what to change.
    pub(crate) fn checked(
        spec: &ReadSpec,
        ts: &crate::config::TableSettings,
        settings: &Settings,
    ) -> Result<Plan> {
        let map = crate::sink::postgres::map::TableMap::of(
            ts,
            &settings.target.schema,
            settings.mask_salt.clone(),
        );
        map.check(&spec.model, ts.from_pattern || ts.is_pattern())?;
        Ok(Plan::new(spec, map))
    }

    pub(crate) fn new(spec: &ReadSpec, map: crate::sink::postgres::map::TableMap) -> Plan {
        let source = &*spec.model;
        let masked = map.masked(source);
        let retyped = map.retyped(source);
        let target = map.model(source);
        // The target's names and kinds on the PostgreSQL side; the key's kinds are the
        // source's (a key column is never masked).
        let t = &target;
        // A masked column is compared masked: the source's values masked in SQL as the
        // sink masks them.
        let cols: Vec<usize> = (0..t.columns.len())
            .filter(|&i| (compared(source, i) || masked.contains(&i)) && !retyped.contains(&i))
            .collect();
        let canon_my = |i: usize| {
            let c = &source.columns[i];
            match map.mysql_masked(c, &mysql_text(spec, i), &quote_mysql(&c.name)) {
                Some(e) => format!("COALESCE(CONCAT('v', {e}), 'n')"),
                None => mysql_canon(spec, i),
            }
        };
        let join_my = |idx: &[usize]| {
            format!(
                "CONCAT_WS(CHAR(1 USING utf8mb4), {})",
                idx.iter()
                    .map(|&i| canon_my(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let join_pg = |idx: &[usize]| {
            format!(
                "concat_ws(chr(1), {})",
                idx.iter()
                    .map(|&i| pg_canon(t, i))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let pk = &t.primary_key;
        Plan {
            // The source's rows the filter keeps: the target holds those only.
            my_from: match map.filter() {
                Some(f) => format!(
                    "(SELECT * FROM {} WHERE {}) AS {}",
                    quote_mysql(&source.name),
                    f.mysql(source),
                    quote_mysql(&source.name)
                ),
                None => quote_mysql(&source.name),
            },
            pg_from: format!("{}.{}", quote_pg(&map.schema), quote_pg(&t.name)),
            my_key: join_my(pk),
            my_row: join_my(&cols),
            pg_key: join_pg(pk),
            pg_row: join_pg(&cols),
            my_key_text: pk.iter().map(|&i| mysql_text(spec, i)).collect(),
            pg_key_text: pk
                .iter()
                .map(|&i| pg_text(t, i, &quote_pg(&t.columns[i].name)))
                .collect(),
            my_pk: pk
                .iter()
                .map(|&i| quote_mysql(&source.columns[i].name))
                .collect(),
            pg_pk: pk.iter().map(|&i| quote_pg(&t.columns[i].name)).collect(),
            my_key_param: pk.iter().map(|&i| mysql_from_text(source, i)).collect(),
            cols,
            map,
            target,
        }
    }

    /// The source's columns left out of the comparison: those whose values the target
    /// cannot hold alike (see [`compared`]) and are not masked.
    pub(crate) fn skipped(&self, t: &TableModel) -> Vec<String> {
        (0..t.columns.len())
            .filter(|i| !self.cols.contains(i))
            .map(|i| t.columns[i].name.clone())
            .collect()
    }

    /// `"a" = <from text $n> AND …`: the PostgreSQL condition that selects the row whose
    /// key texts are parameters `$first`, `$first+1`, … .
    fn pg_key_is(&self, t: &TableModel, first: usize) -> String {
        t.primary_key
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                format!(
                    "{} = {}",
                    self.pg_pk[j],
                    pg_from_text(t, i, &format!("${}", first + j))
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn my_chunk(&self) -> String {
        format!(
            "CAST(CONV(SUBSTR(MD5({}), 1, {CHUNK_HEX_DIGITS}), 16, 10) AS UNSIGNED)",
            self.my_key
        )
    }

    fn pg_chunk(&self) -> String {
        format!(
            "('x' || substr(md5({}), 1, {CHUNK_HEX_DIGITS}))::bit({})::int",
            self.pg_key,
            CHUNK_HEX_DIGITS * 4
        )
    }
}

/// Per chunk: (rows, checksum as decimal text).
type Sums = HashMap<u32, (u64, String)>;

async fn mysql_sums(conn: &mut MySqlConnection, p: &Plan) -> Result<Sums> {
    let sql = format!(
        "SELECT b, COUNT(*), CAST(SUM(CAST(CONV(SUBSTR(h, 1, 15), 16, 10) AS UNSIGNED)) AS CHAR) \
         FROM (SELECT {} AS b, MD5({}) AS h FROM {}) x GROUP BY b",
        p.my_chunk(),
        p.my_row,
        p.my_from
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::db(Side::Source, "computing chunk checksums", &e))?;
    let mut out = Sums::with_capacity(rows.len());
    for r in rows {
        let b: u64 = r.try_get(0).map_err(|e| decode_err(Side::Source, e))?;
        let n: i64 = r.try_get(1).map_err(|e| decode_err(Side::Source, e))?;
        let s: String = r.try_get(2).map_err(|e| decode_err(Side::Source, e))?;
        out.insert(b as u32, (n as u64, s));
    }
    Ok(out)
}

async fn pg_sums(conn: &mut PgConnection, p: &Plan) -> Result<Sums> {
    let sql = format!(
        "SELECT b, count(*), sum(('x' || substr(h, 1, 15))::bit(60)::bigint)::text \
         FROM (SELECT {} AS b, md5({}) AS h FROM {}) x GROUP BY b",
        p.pg_chunk(),
        p.pg_row,
        p.pg_from
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::db(Side::Target, "computing chunk checksums", &e))?;
    let mut out = Sums::with_capacity(rows.len());
    for r in rows {
        let b: i32 = r.try_get(0).map_err(|e| decode_err(Side::Target, e))?;
        let n: i64 = r.try_get(1).map_err(|e| decode_err(Side::Target, e))?;
        let s: String = r.try_get(2).map_err(|e| decode_err(Side::Target, e))?;
        out.insert(b as u32, (n as u64, s));
    }
    Ok(out)
}

fn decode_err(side: Side, e: sqlx::Error) -> Error {
    Error::db(side, "reading checksums", &e)
}

/// Compares both sides' checksums; returns the mismatching chunks with their row count
/// (the larger side's), and the total rows per side.
fn diff_sums(src: &Sums, tgt: &Sums) -> (Vec<(u32, u64)>, u64, u64) {
    let mut bad = Vec::new();
    for (b, s) in src {
        match tgt.get(b) {
            Some(t) if t == s => {}
            Some(t) => bad.push((*b, s.0.max(t.0))),
            None => bad.push((*b, s.0)),
        }
    }
    for (b, t) in tgt {
        if !src.contains_key(b) {
            bad.push((*b, t.0));
        }
    }
    bad.sort_unstable();
    let total = |m: &Sums| m.values().map(|v| v.0).sum();
    (bad, total(src), total(tgt))
}

/// Groups mismatching chunks into passes of at most [`PASS_ROWS`] rows (a chunk bigger
/// than that gets a pass of its own).
fn passes(bad: &[(u32, u64)]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut rows = 0;
    for &(b, n) in bad {
        match out.last_mut() {
            Some(cur) if rows + n <= PASS_ROWS && cur.len() < 10_000 => {
                cur.push(b);
                rows += n;
            }
            _ => {
                out.push(vec![b]);
                rows = n;
            }
        }
    }
    out
}

/// What one target row of a narrowed chunk is: its row hash and primary key as text.
struct TargetRow {
    row_hash: String,
    pk: Vec<String>,
}

/// Narrows one pass of chunks to rows; with `repair`, fixes them. Updates `report`.
async fn narrow_pass(
    spec: &ReadSpec,
    p: &Plan,
    my: &mut MySqlConnection,
    pg: &mut PgConnection,
    chunks: &[u32],
    repair: bool,
    report: &mut TableReport,
) -> Result<()> {
    // Target first: (key hash → row hash, pk text) for these chunks.
    let sql = format!(
        "SELECT md5({}), md5({}), {} FROM {} WHERE {} = ANY($1)",
        p.pg_key,
        p.pg_row,
        p.pg_key_text.join(", "),
        p.pg_from,
        p.pg_chunk()
    );
    let ids: Vec<i32> = chunks.iter().map(|&b| b as i32).collect();
    let mut target: HashMap<String, TargetRow> = HashMap::new();
    {
        let mut stream = sqlx::query(AssertSqlSafe(sql)).bind(&ids).fetch(&mut *pg);
        while let Some(r) = stream
            .try_next()
            .await
            .map_err(|e| Error::db(Side::Target, "listing rows of mismatching chunks", &e))?
        {
            let kh: String = r.try_get(0).map_err(|e| decode_err(Side::Target, e))?;
            let rh: String = r.try_get(1).map_err(|e| decode_err(Side::Target, e))?;
            let pk = (0..p.pg_pk.len())
                .map(|i| r.try_get::<String, _>(2 + i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| decode_err(Side::Target, e))?;
            target.insert(kh, TargetRow { row_hash: rh, pk });
        }
    }
    // Then the source, streamed: full rows, decoded only when they must be repaired.
    let t = &*spec.model;
    let n_sel = spec.select_width();
    let placeholders = vec!["?"; chunks.len()].join(", ");
    let sql = format!(
        "SELECT {}, MD5({}), MD5({}) FROM {} WHERE {} IN ({placeholders})",
        spec.select_list(),
        p.my_key,
        p.my_row,
        p.my_from,
        p.my_chunk()
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for &b in chunks {
        q = q.bind(b as u64);
    }
    let mut to_upsert: Vec<Row> = Vec::new();
    {
        let mut stream = q.fetch(&mut *my);
        while let Some(r) = stream
            .try_next()
            .await
            .map_err(|e| Error::db(Side::Source, "listing rows of mismatching chunks", &e))?
        {
            let kh: String = r.try_get(n_sel).map_err(|e| decode_err(Side::Source, e))?;
            let rh: String = r
                .try_get(n_sel + 1)
                .map_err(|e| decode_err(Side::Source, e))?;
            let (missing, same) = match target.remove(&kh) {
                None => (true, false),
                Some(tr) => (false, tr.row_hash == rh),
            };
            if same {
                continue;
            }
            let row = spec.decode_row(&r)?;
            let key = t.describe_key(&row);
            if missing {
                report.missing += 1;
                if report.missing_keys.len() < SHOWN_KEYS {
                    report.missing_keys.push(key);
                }
            } else {
                report.different += 1;
                if report.different_keys.len() < SHOWN_KEYS {
                    report.different_keys.push(key);
                }
            }
            if repair {
                to_upsert.push(row);
            }
        }
    }
    let extra: Vec<Vec<String>> = target.into_values().map(|tr| tr.pk).collect();
    for pk in &extra {
        report.extra += 1;
        if report.extra_keys.len() < SHOWN_KEYS {
            report.extra_keys.push(describe_key(t, pk));
        }
    }
    if repair && (!to_upsert.is_empty() || !extra.is_empty()) {
        let mut tx = pg
            .begin()
            .await
            .map_err(|e| Error::db(Side::Target, "beginning a repair", &e))?;
        apply_repair(t, p, &mut tx, &to_upsert, &extra).await?;
        tx.commit()
            .await
            .map_err(|e| Error::db(Side::Target, "committing a repair", &e))?;
        report.upserted += to_upsert.len() as u64;
        report.deleted += extra.len() as u64;
    }
    Ok(())
}

/// A key as canonical texts, as people read it: `id=5, region="eu"`.
fn describe_key(t: &TableModel, key: &[String]) -> String {
    t.primary_key
        .iter()
        .zip(key)
        .map(|(&i, v)| format!("{}={v:?}", t.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upserts `rows` (source rows) and deletes the rows keyed `extra` (canonical key texts) on
/// the target, in `tx`. The watermark is not touched.
pub(crate) async fn apply_repair(
    t: &TableModel,
    p: &Plan,
    tx: &mut PgConnection,
    rows: &[Row],
    extra: &[Vec<String>],
) -> Result<()> {
    let err = |ctx: &'static str| move |e: sqlx::Error| Error::db(Side::Target, ctx, &e);
    if !rows.is_empty() {
        // In the target's terms: its names, its masks.
        let target = &p.target;
        let masked: Vec<Row>;
        let rows = if p.map.masks_rows() {
            masked = rows
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    p.map.mask_row(t, &mut r);
                    r
                })
                .collect();
            &masked[..]
        } else {
            rows
        };
        let cols: Vec<String> = target.columns.iter().map(|c| quote_pg(&c.name)).collect();
        let col_list = cols.join(", ");
        let action = conflict_action(target);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TEMP TABLE IF NOT EXISTS sluice_repair (LIKE {}) ON COMMIT DROP",
            p.pg_from
        )))
        .execute(&mut *tx)
        .await
        .map_err(err("creating the repair staging table"))?;
        let mut buf = Vec::new();
        encode_text(rows, &mut buf);
        let copy_sql = format!("COPY pg_temp.sluice_repair ({col_list}) FROM STDIN");
        let mut copy = tx
            .copy_in_raw(&copy_sql)
            .await
            .map_err(err("copying repaired rows"))?;
        if let Err(e) = copy.send(buf.as_slice()).await {
            let _ = copy.abort("send failed").await;
            return Err(err("copying repaired rows")(e));
        }
        copy.finish().await.map_err(err("copying repaired rows"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "INSERT INTO {} ({col_list}) SELECT {col_list} FROM pg_temp.sluice_repair ON CONFLICT ({}) {action}; TRUNCATE pg_temp.sluice_repair",
            p.pg_from,
            p.pg_pk.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .map_err(err("upserting repaired rows"))?;
    }
    if !extra.is_empty() {
        let sql = format!("DELETE FROM {} WHERE {}", p.pg_from, p.pg_key_is(t, 1));
        for pk in extra {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for v in pk {
                q = q.bind(v);
            }
            q.execute(&mut *tx)
                .await
                .map_err(err("deleting extra rows"))?;
        }
    }
    Ok(())
}

/// Compares one table; with `repair`, fixes what differs and compares again.
pub async fn verify_table(settings: &Settings, name: &str, repair: bool) -> Result<TableReport> {
    let started = Instant::now();
    let ts = settings
        .tables
        .iter()
        .find(|t| t.takes(name))
        .ok_or_else(|| {
            Error::Config(format!(
                "table {name:?} is not configured; configured tables: {}",
                settings
                    .tables
                    .iter()
                    .map(|t| format!("{:?}", t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    // A table a pattern takes: the pattern's settings under the table's name.
    let ts = &crate::config::TableSettings {
        name: name.to_string(),
        exclude: Vec::new(),
        from_pattern: ts.is_pattern(),
        ..ts.clone()
    };
    let mut my = mysql::connect(&settings.source.url).await?;
    let mut pg = crate::sink::postgres::connect(&settings.target.url, "verify").await?;
    let plan = crate::source::plan_table(&mut my, settings, ts).await?;
    let spec = plan.spec();
    let t = &*spec.model;
    if repair {
        // A repair writes rows: it must not race the table's owner, which could write an
        // older version back. It takes the table's ownership lock for its duration.
        let key = StateKey::new(&settings.pipeline_name, &t.name);
        if !ownership::try_lock(&mut pg, &key).await? {
            return Err(Error::Other(format!(
                "table {:?} is being replicated by a running sluice process (pipeline {:?}); a repair beside it could write an older version of a row back. Stop that process (or let `run --once` end), then repair",
                t.name, settings.pipeline_name
            )));
        }
        let deferred = crate::state::load(&mut pg, &key)
            .await?
            .and_then(|s| s.deferred_key);
        if deferred.is_some() {
            return Err(Error::Other(format!(
                "table {:?} is in its initial load: its target has no primary key until `sluice run` catches up and builds it, and a repair needs it; let the run finish the load (`sluice status` says when), then repair",
                t.name
            )));
        }
    }
    let p = Plan::checked(spec, ts, settings)?;
    let mut report = TableReport {
        table: t.name.clone(),
        skipped_columns: p.skipped(t),
        ..Default::default()
    };
    let (src, tgt) = tokio::join!(mysql_sums(&mut my, &p), pg_sums(&mut pg, &p));
    let (src, tgt) = (src?, tgt.map_err(missing_target(&p))?);
    let (bad, src_rows, tgt_rows) = diff_sums(&src, &tgt);
    report.source_rows = src_rows;
    report.target_rows = tgt_rows;
    report.chunks = src.len().max(tgt.len());
    report.mismatched_chunks = bad.len();
    for pass in passes(&bad) {
        narrow_pass(spec, &p, &mut my, &mut pg, &pass, repair, &mut report).await?;
    }
    if repair && report.mismatches() > 0 {
        let (src, tgt) = tokio::join!(mysql_sums(&mut my, &p), pg_sums(&mut pg, &p));
        let (bad, _, tgt_rows) = diff_sums(&src?, &tgt?);
        report.equal_after_repair = Some(bad.is_empty());
        report.target_rows = tgt_rows;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn missing_target(p: &Plan) -> impl FnOnce(Error) -> Error + '_ {
    move |e| {
        if e.sqlstate() == Some(crate::error::PG_UNDEFINED_TABLE) {
            Error::Schema(format!(
                "the target table {} does not exist; run `sluice migrate` or `sluice run` first",
                p.pg_from
            ))
        } else {
            e
        }
    }
}

/// `verify`: every configured table, or only `table`.
pub fn verify(settings: &Settings, table: Option<&str>, repair: bool) -> Result<Vec<TableReport>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(e.to_string()))?;
    rt.block_on(async {
        // Tables a pattern takes that cannot be replicated are left out, as `run` does.
        // (name, taken by a pattern)
        let tables: Vec<(String, bool)> = match table {
            Some(t) => vec![(t.to_string(), false)],
            None if settings.tables.iter().any(|t| t.is_pattern()) => {
                let mut conn = crate::source::mysql::connect(&settings.source.url).await?;
                crate::source::mysql::expand_on_source(&mut conn, &settings.tables)
                    .await?
                    .0
                    .into_iter()
                    .map(|t| (t.name, t.from_pattern))
                    .collect()
            }
            None => settings
                .tables
                .iter()
                .map(|t| (t.name.clone(), false))
                .collect(),
        };
        let mut out = Vec::new();
        for (name, from_pattern) in &tables {
            match verify_table(settings, name, repair).await {
                Ok(r) => out.push(r),
                Err(e @ (Error::Schema(_) | Error::Config(_))) if *from_pattern => {
                    tracing::warn!(table = %name, reason = %e, "a table a [[tables]] pattern takes cannot be replicated; left out");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    })
}

/// The report as people read it.
pub fn describe(r: &TableReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let verdict = if r.mismatches() == 0 {
        "equal"
    } else {
        "DIFFERENT"
    };
    let _ = write!(
        s,
        "{}: {verdict}: {} rows on the source, {} on the target; {} of {} chunks differ ({:.2} s)",
        r.table, r.source_rows, r.target_rows, r.mismatched_chunks, r.chunks, r.seconds
    );
    for (what, n, keys) in [
        ("missing on the target", r.missing, &r.missing_keys),
        ("extra on the target", r.extra, &r.extra_keys),
        ("different", r.different, &r.different_keys),
    ] {
        if n > 0 {
            let more = if n as usize > keys.len() { ", …" } else { "" };
            let _ = write!(s, "\n  {what}: {n} ({}{more})", keys.join("; "));
        }
    }
    if !r.skipped_columns.is_empty() {
        let _ = write!(
            s,
            "\n  not compared (no common text form): {}",
            r.skipped_columns.join(", ")
        );
    }
    if let Some(eq) = r.equal_after_repair {
        let _ = write!(
            s,
            "\n  repaired: {} rows upserted, {} deleted; now {}",
            r.upserted,
            r.deleted,
            if eq { "equal" } else { "STILL DIFFERENT" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stay_bounded() {
        let bad: Vec<(u32, u64)> = (0..10).map(|b| (b, 30_000)).collect();
        let p = passes(&bad);
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|c| c.len() <= 3));
        assert_eq!(passes(&[(1, 500_000), (2, 1)]).len(), 2);
    }

    #[test]
    fn sums_diff_both_ways() {
        let mut a = Sums::new();
        a.insert(1, (2, "10".into()));
        a.insert(2, (1, "5".into()));
        let mut b = Sums::new();
        b.insert(1, (2, "10".into()));
        b.insert(3, (1, "7".into()));
        let (bad, s, t) = diff_sums(&a, &b);
        assert_eq!(bad, vec![(2, 1), (3, 1)]);
        assert_eq!((s, t), (3, 3));
    }
}
