//! The binlog connection: opening it where the stream resumes (refusing a purged file),
//! the server's heartbeat, telling a dead connection from a quiet source, and the driver's
//! errors as sluice's.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::events::{Event, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use tracing::debug;

use super::BinlogPos;
use crate::error::{Error, Result, Side};

/// How long the stream may stay silent (the server sends a heartbeat every second) before the
/// connection is taken for dead.
pub(super) const SILENCE: Duration = Duration::from_secs(10);

/// The binlog file sluice needs is gone: a permanent stop, saying how to start over.
fn purged(from: &BinlogPos, oldest: Option<&str>) -> Error {
    Error::Other(format!(
        "the source no longer has binlog file {} (needed from position {from}); its oldest is {}. The changes in between are lost to binlog capture: to start over, stop sluice, delete this pipeline's rows from sluice.replication_state and empty the target tables (they are snapshotted again), or keep binary logs longer (binlog_expire_logs_seconds) so that sluice can be down that long",
        from.file,
        oldest.unwrap_or("(none)")
    ))
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
}

impl Connection {
    /// Connects as replica `server_id` and asks for the binlog from `from`.
    pub(super) async fn open(url: &str, server_id: u32, from: &BinlogPos) -> Result<Connection> {
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
        // The file to start from must still be on the server: never skip what was purged.
        let logs: Vec<mysql_async::Row> = conn
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| source_err("listing the binary logs (SHOW BINARY LOGS)", e))?;
        let names: Vec<String> = logs.iter().filter_map(|r| r.get::<String, _>(0)).collect();
        if !names.contains(&from.file) {
            return Err(purged(from, names.first().map(String::as_str)));
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
        let request = BinlogStreamRequest::new(server_id)
            .with_filename(from.file.as_bytes())
            .with_pos(from.pos);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| source_err("requesting the binlog stream", e))?;
        debug!(from = %from, "binlog stream opened");
        Ok(Connection {
            stream,
            last_event: Instant::now(),
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
