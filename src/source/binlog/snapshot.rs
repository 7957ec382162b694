//! The initial copy of the tables that have no position yet: one `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT` (no lock is taken: InnoDB serves every read from the snapshot), the
//! binlog position it is consistent with, and each table read in primary-key order, a page at
//! a time (bounded in rows and bytes like polling's pages).
//!
//! MariaDB reports the position exactly (`binlog_snapshot_file`/`_position`). MySQL has no
//! such status: the position is read just before the snapshot starts, so the stream may
//! replay a few transactions the snapshot already holds, which converges (row images are
//! whole).

use sea_orm::sqlx::{self, AssertSqlSafe, MySqlConnection, Row as _};

use super::table::BTable;
use super::{BinlogPos, GtidState};
use crate::error::{Error, Result, Side};
use crate::source::mysql::read::{bind_value, read_page};
use crate::source::mysql::{self, Flavor};
use crate::value::Row;

/// A consistent snapshot, open on its own connection.
pub(super) struct Snapshot {
    conn: MySqlConnection,
    /// The binlog position the snapshot is consistent with.
    pub pos: BinlogPos,
}

impl Snapshot {
    pub async fn begin(url: &str) -> Result<Snapshot> {
        let mut conn = mysql::connect(url).await?;
        let flavor = Flavor::detect(&mut conn).await?;
        let err = |what: &'static str| move |e: sqlx::Error| Error::db(Side::Source, what, &e);
        sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut conn)
            .await
            .map_err(err("setting the snapshot's isolation level"))?;
        let before = if flavor.mariadb {
            None
        } else {
            Some(super::current_position(&mut conn, flavor).await?)
        };
        // MariaDB: the GTID state with the binlog's end around it; when the end did not move
        // (nothing committed in between) and the snapshot is consistent with that same end,
        // that state is the snapshot's, exactly, without reading the binlog file.
        let quiet = if flavor.mariadb {
            let at = super::current_position(&mut conn, flavor).await?;
            let gtid: Option<String> = sqlx::query_scalar("SELECT @@gtid_binlog_pos")
                .fetch_one(&mut conn)
                .await
                .map_err(err("reading the GTID state (@@gtid_binlog_pos)"))?;
            let still = super::current_position(&mut conn, flavor).await?;
            (still == at).then_some((at, gtid.and_then(|g| GtidState::parse(&g))))
        } else {
            None
        };
        sqlx::raw_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(err("starting a consistent snapshot"))?;
        let pos = match before {
            Some(p) => p,
            None => snapshot_position(&mut conn).await?,
        };
        // Whose binlog the file is. The GTID state there: MySQL's comes with the position;
        // MariaDB's when the binlog was quiet around the snapshot (above). Otherwise it is not
        // asked here (`BINLOG_GTID_POS` reads the binlog file up to the position, a third of
        // a second for a full 1 GiB file): the stream, which starts there, learns it when it
        // connects, and positions stored while the copy runs go without it (a failover during
        // that copy cannot resume by GTID).
        let mut pos = pos;
        if let Some((at, gtid)) = quiet {
            if at == pos && pos.gtid.is_none() {
                pos.gtid = gtid;
            }
        }
        let (id, uuid) = super::server_identity(&mut conn, flavor).await?;
        (pos.server_id, pos.server_uuid) = (Some(id), uuid);
        tracing::info!(position = %pos, "consistent snapshot started");
        Ok(Snapshot { conn, pos })
    }

    /// Reads the page of `t` after the key its copy got to. Returns the rows and whether
    /// the table is done. `page`: its bound in bytes and rows.
    pub async fn read(&mut self, t: &mut BTable, page: (usize, usize)) -> Result<(Vec<Row>, bool)> {
        copy_page(&mut self.conn, t, page).await
    }

    /// Ends the snapshot's transaction.
    pub async fn finish(mut self) -> Result<()> {
        sqlx::raw_sql("COMMIT")
            .execute(&mut self.conn)
            .await
            .map_err(|e| Error::db(Side::Source, "ending the consistent snapshot", &e))?;
        Ok(())
    }
}

/// The binlog position MariaDB reports for the consistent snapshot open on `conn`.
async fn snapshot_position(conn: &mut MySqlConnection) -> Result<BinlogPos> {
    let rows = sqlx::query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::db(Side::Source, "reading the snapshot's binlog position", &e))?;
    let get = |name: &str| {
        rows.iter().find_map(|r| {
            let n: String = r.try_get(0).ok()?;
            (n.eq_ignore_ascii_case(name)).then(|| r.try_get::<String, _>(1).ok())?
        })
    };
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(file), Some(pos)) if !file.is_empty() => {
            Ok(BinlogPos::at(file, pos.parse().unwrap_or(4)))
        }
        _ => Err(Error::Config(
            "the source reports no binlog_snapshot_file: binlog capture needs the binary log on (log_bin)".into(),
        )),
    }
}

/// Reads one page of table `t` in primary-key order, after the key its copy got to (from
/// its start before the first). Returns the rows and whether the table is done.
async fn copy_page(
    conn: &mut MySqlConnection,
    t: &mut BTable,
    (page_bytes, page_rows): (usize, usize),
) -> Result<(Vec<Row>, bool)> {
    let (spec, copy) = (&t.spec, &mut t.copy);
    let after = t.snapshot.as_ref().and_then(|a| a.after.as_deref());
    let q = match after {
        None => sqlx::query(AssertSqlSafe(copy.first.as_str())),
        Some(key) => {
            let mut q = sqlx::query(AssertSqlSafe(copy.after.as_str()));
            for &i in &copy.binds {
                q = bind_value(q, &key[i]);
            }
            q
        }
    };
    let page = read_page(q, conn, spec, copy.limit, page_bytes, page_rows)
        .await?
        .map_err(|e| {
            Error::db(
                Side::Source,
                format!("reading table {:?} for its snapshot", spec.model.name),
                &e,
            )
        })?;
    if let Some(next) = page.next_limit {
        copy.limit = next;
    }
    Ok((page.rows, !page.full))
}

/// Snapshots beside the stream (MariaDB): each chunk of a table is read in a consistent
/// snapshot of its own, at the exact binlog position the server reports for it, on one
/// connection kept for the purpose. Nothing is locked or written on the source.
pub(super) struct Chunker {
    conn: MySqlConnection,
    server_id: u32,
    server_uuid: Option<String>,
}

/// One chunk: a table's rows after a key, as they were at `at`.
pub(super) struct Chunk {
    /// Index of the table in the source's tables.
    pub table: usize,
    pub rows: Vec<Row>,
    /// The binlog position the chunk is consistent with.
    pub at: BinlogPos,
    /// The last chunk of the table.
    pub done: bool,
    /// The version of the table's shape it was read in.
    pub version: u32,
}

impl Chunker {
    pub async fn open(url: &str) -> Result<Chunker> {
        let mut conn = mysql::connect(url).await?;
        let flavor = Flavor::detect(&mut conn).await?;
        sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut conn)
            .await
            .map_err(|e| Error::db(Side::Source, "setting the snapshot's isolation level", &e))?;
        let (server_id, server_uuid) = super::server_identity(&mut conn, flavor).await?;
        Ok(Chunker {
            conn,
            server_id,
            server_uuid,
        })
    }

    /// Reads the next chunk of `t` (the source's table `table`), in a snapshot of its own.
    pub async fn read(
        &mut self,
        table: usize,
        t: &mut BTable,
        page: (usize, usize),
    ) -> Result<Chunk> {
        sqlx::raw_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .execute(&mut self.conn)
            .await
            .map_err(|e| Error::db(Side::Source, "starting a consistent snapshot", &e))?;
        let started = std::time::Instant::now();
        let mut at = snapshot_position(&mut self.conn).await?;
        (at.server_id, at.server_uuid) = (Some(self.server_id), self.server_uuid.clone());
        let read = copy_page(&mut self.conn, t, page).await;
        if let Ok((rows, _)) = &read {
            tracing::debug!(table = %t.spec.model.name, rows = rows.len(), ms = started.elapsed().as_secs_f64() * 1000.0, "chunk read");
        }
        // The transaction ends whatever the read gave.
        let end = sqlx::raw_sql("COMMIT")
            .execute(&mut self.conn)
            .await
            .map_err(|e| Error::db(Side::Source, "ending a chunk's consistent snapshot", &e));
        let (rows, done) = read?;
        end?;
        Ok(Chunk {
            table,
            rows,
            at,
            done,
            version: t.spec.model.version,
        })
    }
}
