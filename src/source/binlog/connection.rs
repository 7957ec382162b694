//! The binlog connection: opening it where the stream resumes (refusing a purged file),
//! the server's heartbeat, telling a dead connection from a quiet source, and the driver's
//! errors as sluice's.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::events::{Event, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use tracing::{debug, warn};

use super::charset::Charsets;
use super::{BinlogPos, GtidState};
use crate::error::{Error, Result, Side};

/// How long the stream may stay silent (the server sends a heartbeat every second) before the
/// connection is taken for dead.
pub(super) const SILENCE: Duration = Duration::from_secs(10);

/// The binlog file sluice needs is gone: a permanent stop, saying how to start over.
fn purged(from: &BinlogPos, oldest: Option<&str>) -> Error {
    Error::Other(format!(
        "the source no longer has binlog file {} (needed from position {from}); its oldest is {}. The changes in between are lost to binlog capture: set [source] on_binlog_gone = \"snapshot\" and start sluice again (the tables whose file is gone have their target emptied and are snapshotted again, the others go on), and keep binary logs longer (binlog_expire_logs_seconds) so that sluice can be down that long",
        from.file,
        oldest.unwrap_or("(none)")
    ))
}

/// The GTID state to ask `here` (another server than the one that wrote `from`) for, checked
/// against its history: a server of the same replication topology holds every transaction
/// of it in its binlog; any other server is refused, naming both.
async fn gtid_start(
    conn: &mut mysql_async::Conn,
    mariadb: bool,
    from: &BinlogPos,
    here: &BinlogPos,
) -> Result<GtidState> {
    let Some(state) = from.gtid.clone() else {
        return Err(Error::Other(format!(
            "the source is now {} but sluice's position ({from}) is in the binlog of {} and has no GTID state (it was written by a sluice before 0.9, or the source had no GTIDs), so its place in this server's binlog is unknown. Point sluice back at {}, let it commit once (positions gain their GTID state), and then switch; or start over: stop sluice, delete this pipeline's rows from sluice.replication_state and empty the target tables (they are snapshotted again)",
            here.server(),
            from.server(),
            from.server()
        )));
    };
    let (sql, name) = if mariadb {
        ("SELECT @@gtid_binlog_state", "@@gtid_binlog_state")
    } else {
        ("SELECT @@gtid_executed", "@@gtid_executed")
    };
    let theirs = scalar(conn, sql, "reading the server's GTID history")
        .await?
        .unwrap_or_default();
    let missing = state.missing_on(&theirs);
    if !missing.is_empty() {
        return Err(Error::Other(format!(
            "the source ({}) does not hold sluice's position in its binlog: sluice has applied up to GTID {state} (binlog {}:{} of {}), the server's history ({name}) is '{theirs}', which lacks {}. It is not a server of the same replication topology (or it is behind, or it has purged those binlogs): nothing was read. Point sluice at the server that took over from {} (a replica with log_slave_updates that has replicated that far), or start over: stop sluice, delete this pipeline's rows from sluice.replication_state and empty the target tables",
            here.server(),
            from.file,
            from.pos,
            from.server(),
            missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            from.server()
        )));
    }
    warn!(from = %from.server(), to = %here.server(), gtid = %state, "the source server changed (a failover, or sluice pointed at another server of the topology): resuming by GTID");
    Ok(state)
}

/// MySQL's GTID set as the dump request's.
fn mysql_sids(state: &GtidState) -> Result<Vec<mysql_async::Sid<'static>>> {
    state
        .to_string()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<mysql_async::Sid<'static>>()
                .map_err(|e| Error::Other(format!("the GTID set {s:?} cannot be sent: {e}")))
        })
        .collect()
}

/// The server refused the GTID request (1236: the state is not in its binlog, or purged):
/// a permanent stop naming the state.
fn gtid_refused(e: Error, state: &GtidState) -> Error {
    match e {
        Error::Database { message, transient: false, .. } => Error::Other(format!(
            "the source refused to stream from GTID {state}: {message}. Its binlog does not hold that position (purged, or another topology): point sluice at a server that does, or start over: stop sluice, delete this pipeline's rows from sluice.replication_state and empty the target tables"
        )),
        e => e,
    }
}

/// The stream broke off (`message`: how): reconnecting may mend it.
fn broken(message: String) -> Error {
    Error::Database {
        side: Side::Source,
        context: "reading the binlog stream".into(),
        message,
        code: None,
        transient: true,
    }
}

fn source_err(context: &str, e: mysql_async::Error) -> Error {
    use mysql_async::Error as E;
    let transient = match &e {
        // An untrusted certificate, or TLS asked of a server without it: not fixed by waiting.
        E::Io(mysql_async::IoError::Io(_)) => true,
        E::Io(_) => false,
        E::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => false,
        E::Driver(_) => true,
        E::Server(s) => {
            // 1236: the binlog file is gone (purged): never fixed by waiting.
            s.code != 1236
                && (s.code == 1053 || s.message.to_ascii_lowercase().contains("shutdown"))
        }
        _ => false,
    };
    Error::Database {
        side: Side::Source,
        context: context.to_string(),
        message: match &e {
            E::Io(mysql_async::IoError::Io(_)) => crate::redact::redact_text(&e.to_string()),
            E::Io(_) | E::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => format!(
                "{}; {}",
                crate::redact::redact_text(&e.to_string()),
                crate::tls::hint(Side::Source)
            ),
            _ => crate::redact::redact_text(&e.to_string()),
        },
        code: match &e {
            E::Server(s) => Some(s.state.clone()),
            _ => None,
        },
        transient,
    }
}

/// An open binlog stream.
pub(super) struct Connection {
    stream: BinlogStream,
    /// When the last event (a heartbeat included) arrived.
    last_event: Instant,
    /// The server it reads: its `server_id` and MySQL's `server_uuid`.
    pub server_id: u32,
    pub server_uuid: Option<String>,
    /// The GTID state where the stream starts, when known: the position's own, or (a position
    /// without one, written by an older sluice) read from the server.
    pub start_gtid: Option<GtidState>,
    /// It was asked for by GTID (the position's file and offset are another server's): the
    /// file it reads is known from the server's first event, not from the position.
    pub by_gtid: bool,
    /// The server's binlog files (to read the first rotate's file name).
    pub files: Vec<String>,
    /// The server's collations, to read text columns in their character set.
    pub charsets: Charsets,
}

/// A scalar of the server, as text.
async fn scalar(conn: &mut mysql_async::Conn, sql: &str, what: &str) -> Result<Option<String>> {
    conn.query_first::<Option<String>, _>(sql)
        .await
        .map(Option::flatten)
        .map_err(|e| source_err(what, e))
}

/// Whether the server's binlog files (`SHOW BINARY LOGS`: name, size) hold `from`'s file at
/// least as far as its offset. A binlog reset since the process read it (`RESET MASTER`)
/// starts the files again, shorter: no longer the history the position was read in.
fn reaches(sizes: &[(String, u64)], from: &BinlogPos) -> bool {
    sizes
        .iter()
        .any(|(f, size)| *f == from.file && *size >= from.pos)
}

impl Connection {
    /// Connects as replica `replica_id` and asks for the binlog from `from`: by its file and
    /// offset on the server that wrote it, by its GTID state on any other server of the
    /// topology (a failover), refusing a server whose history does not hold that state.
    /// `by_gtid`: by the GTID state even on the server that wrote the position. `trusted`:
    /// the position was read from this server by this process (a snapshot's, or one its
    /// batches committed), so its GTID state needs no check against the server's binlog
    /// (`BINLOG_GTID_POS` reads the file up to the position: about 0.1 s at 600 MB here).
    pub(super) async fn open(
        url: &str,
        replica_id: u32,
        from: &BinlogPos,
        by_gtid: bool,
        trusted: bool,
    ) -> Result<Connection> {
        let (opts, plaintext) = crate::source::mysql::binlog_opts(url)?;
        let no_tls = |e: &mysql_async::Error| {
            matches!(
                e,
                mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
            )
        };
        let encrypted = opts.ssl_opts().is_some();
        let mut conn = match (mysql_async::Conn::new(opts).await, plaintext) {
            // ssl-mode=PREFERRED and a server without TLS: plaintext, as sqlx does.
            (Err(e), Some(plain)) if no_tls(&e) => {
                mysql_async::Conn::new(plain).await.map(|c| (c, false))
            }
            (r, _) => r.map(|c| (c, encrypted)),
        }
        .map(|(c, encrypted)| {
            crate::tls::note(Side::Source, url, "binlog stream", encrypted);
            c
        })
        .map_err(|e| source_err("connecting for the binlog stream", e))?;
        let mariadb = scalar(
            &mut conn,
            "SELECT VERSION()",
            "reading the server's version",
        )
        .await?
        .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
        let server_id: u32 = scalar(&mut conn, "SELECT @@server_id", "reading @@server_id")
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let server_uuid = if mariadb {
            None
        } else {
            scalar(&mut conn, "SELECT @@server_uuid", "reading @@server_uuid").await?
        };
        let logs: Vec<mysql_async::Row> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| source_err("listing the binary logs (SHOW BINARY LOGS)", e))?;
        let sizes: Vec<(String, u64)> = logs
            .iter()
            .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1).unwrap_or(0))))
            .collect();
        let files: Vec<String> = sizes.iter().map(|(f, _)| f.clone()).collect();
        let trusted = trusted && reaches(&sizes, from);
        let charsets = Charsets::load(&mut conn)
            .await
            .map_err(|e| source_err("reading the server's character sets", e))?;
        let here = BinlogPos {
            server_id: Some(server_id),
            server_uuid: server_uuid.clone(),
            ..BinlogPos::at("", 0)
        };
        // By file and offset on the server that wrote them, as long as its binlog there is the
        // history the position's GTID state says (a server that only shares the server_id is
        // read by GTID, which it must then hold).
        let mut by_gtid = by_gtid || !from.same_server(&here);
        let mut start_gtid = from.gtid.clone();
        if !by_gtid {
            // The file to start from must still be on the server: never skip what was purged.
            if !files.contains(&from.file) {
                return Err(purged(from, files.first().map(String::as_str)));
            }
            if mariadb && !(trusted && from.gtid.is_some()) {
                let at: Option<String> = conn
                    .exec_first(
                        "SELECT BINLOG_GTID_POS(?, ?)",
                        (from.file.as_str(), from.pos),
                    )
                    .await
                    .map_err(|e| {
                        source_err(
                            "reading the GTID state at the binlog position (BINLOG_GTID_POS)",
                            e,
                        )
                    })?
                    .flatten();
                let at = at.and_then(|s| GtidState::parse(&s));
                match (&from.gtid, at) {
                    (Some(ours), Some(theirs)) if *ours == theirs => {}
                    (Some(ours), theirs) => {
                        warn!(position = %from, server_says = %theirs.map(|g| g.to_string()).unwrap_or_else(|| "nothing".into()), "the server's binlog at the position does not hold the position's GTID state (another server with the same server_id?): resuming by GTID {ours}");
                        by_gtid = true;
                    }
                    (None, theirs) => start_gtid = theirs,
                }
            }
        }
        // A heartbeat every second while the binlog is quiet: a dead connection shows.
        conn.query_drop(
            "SET @master_heartbeat_period = 1000000000, @source_heartbeat_period = 1000000000",
        )
        .await
        .map_err(|e| source_err("setting the binlog heartbeat", e))?;
        // A replica that understands MariaDB's GTID events (MARIA_SLAVE_CAPABILITY_GTID): the
        // server sends them as they are. To an older one it sends each as a `BEGIN` query,
        // which it cannot make of an XA transaction's (ERROR 1236, "Failed to replace GTID
        // event with backwards-compatible event"). MySQL ignores the variable.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(|e| source_err("announcing the replica's capabilities", e))?;
        let request = BinlogStreamRequest::new(replica_id);
        let stream = if by_gtid {
            let state = gtid_start(&mut conn, mariadb, from, &here).await?;
            let sets;
            let request = if mariadb {
                conn.exec_drop(
                    "SET @slave_connect_state = ?, @slave_gtid_strict_mode = 0, @slave_gtid_ignore_duplicates = 0",
                    (state.to_string(),),
                )
                .await
                .map_err(|e| source_err("asking for the binlog by GTID (@slave_connect_state)", e))?;
                request
            } else {
                sets = mysql_sids(&state)?;
                request.with_gtid().with_gtid_set(sets.iter().cloned())
            };
            start_gtid = Some(state.clone());
            conn.get_binlog_stream(request).await.map_err(|e| {
                gtid_refused(
                    source_err("requesting the binlog stream by GTID", e),
                    &state,
                )
            })?
        } else {
            conn.get_binlog_stream(
                request
                    .with_filename(from.file.as_bytes())
                    .with_pos(from.pos),
            )
            .await
            .map_err(|e| source_err("requesting the binlog stream", e))?
        };
        debug!(from = %from, by_gtid, server_id, "binlog stream opened");
        Ok(Connection {
            stream,
            last_event: Instant::now(),
            server_id,
            server_uuid,
            start_gtid,
            by_gtid,
            files,
            charsets,
        })
    }

    /// The next event, waiting `wait` for it. `None`: nothing came for that long outside a
    /// transaction (`in_txn`) and the server's heartbeats still arrive; inside one, or with no
    /// heartbeat for `SILENCE`, the connection is taken for dead.
    pub(super) async fn next_event(
        &mut self,
        wait: Duration,
        in_txn: bool,
    ) -> Result<Option<Event>> {
        let ev = match tokio::time::timeout(wait, self.stream.next()).await {
            Err(_) if !in_txn => {
                if self.last_event.elapsed() > SILENCE {
                    return Err(broken(format!(
                        "nothing (not even a heartbeat) for {} s",
                        SILENCE.as_secs()
                    )));
                }
                return Ok(None);
            }
            Err(_) => {
                return Err(broken(format!(
                    "silent for {} s inside a transaction",
                    SILENCE.as_secs()
                )))
            }
            Ok(None) => return Err(broken("the server ended the stream".into())),
            Ok(Some(Err(e))) => return Err(source_err("reading the binlog stream", e)),
            Ok(Some(Ok(ev))) => ev,
        };
        self.last_event = Instant::now();
        Ok(Some(ev))
    }

    /// The table map the server last sent for `table_id` on this connection.
    pub(super) fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>> {
        self.stream.get_tme(table_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_read_here_is_trusted_only_while_its_file_still_reaches_it() {
        let from = BinlogPos::at("mysql-bin.000007", 5_000);
        let logs = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
            list.iter().map(|(f, n)| (f.to_string(), *n)).collect()
        };
        assert!(reaches(
            &logs(&[("mysql-bin.000006", 9_000), ("mysql-bin.000007", 5_000)]),
            &from
        ));
        assert!(reaches(&logs(&[("mysql-bin.000007", 80_000)]), &from));
        // Reset since: the file starts again, shorter than the offset.
        assert!(!reaches(&logs(&[("mysql-bin.000007", 4_999)]), &from));
        // Purged or renumbered.
        assert!(!reaches(&logs(&[("mysql-bin.000008", 80_000)]), &from));
        assert!(!reaches(&[], &from));
    }
}
