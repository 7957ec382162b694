//! One error type for the whole crate, with the questions every caller asks of it: may
//! this be retried ([`Error::is_retryable`]), which exit code does it mean
//! ([`Error::exit_code`]), and is it about one table or everything.
//!
//! Errors cross actor boundaries as values (`Arc<Error>`), never as strings: whoever
//! receives one matches on its variant (and, for databases, on the SQLSTATE in `code`)
//! rather than on its text.

use std::fmt;

/// Everything that can stop or delay sluice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or configuration: a malformed file, an unknown key, an invalid value.
    #[error("configuration error: {0}")]
    Config(String),
    /// A table definition sluice cannot replicate (missing table, no primary key, unknown
    /// cursor column, unsupported column type, incompatible target table).
    #[error("{0}")]
    Schema(String),
    /// A database operation failed. `transient` errors (connection lost or refused, server
    /// shutting down, deadlock, serialization failure) are retried; others stop the table.
    #[error("{side} {context}: {message}")]
    Database {
        side: Side,
        context: String,
        message: String,
        /// The SQLSTATE, when the server sent one.
        code: Option<String>,
        transient: bool,
    },
    /// A row value that cannot be carried to the target.
    #[error("bad value in table {table}, key {key}: {reason}")]
    BadRow {
        table: String,
        key: String,
        reason: String,
    },
    /// This process no longer owns the table: another sluice process took it over (its
    /// ownership epoch is newer), so nothing more may be written for it from here.
    #[error("table {table:?}: {message}")]
    Fenced { table: String, message: String },
    /// The source table is gone (dropped, or renamed away). A table a `[[tables]]` pattern
    /// took just stops being replicated; one named on its own stops as a failure.
    #[error("table {0:?} no longer exists on the source (dropped or renamed); it stops, the other tables go on. If it was renamed, put its new name in its [[tables]] entry and restart (the target table is then copied again under the new name); if it was dropped, remove its [[tables]] entry")]
    TableGone(String),
    /// A wait or a retry was cut short because shutdown was asked for.
    #[error("stopped by a shutdown request")]
    Shutdown,
    /// Anything else (I/O, a stopped actor).
    #[error("{0}")]
    Other(String),
}

/// Which database an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source (MySQL)",
            Side::Target => "target (PostgreSQL)",
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// PostgreSQL: the relation does not exist.
pub const PG_UNDEFINED_TABLE: &str = "42P01";
/// PostgreSQL: the schema does not exist.
pub const PG_UNDEFINED_SCHEMA: &str = "3F000";

impl Error {
    /// True when waiting and trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Database {
                transient: true,
                ..
            }
        )
    }

    /// Process exit code: 2 for bad usage, configuration or table definitions, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Schema(_) | Error::TableGone(_) => 2,
            _ => 1,
        }
    }

    /// The SQLSTATE of a database error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Wraps a sqlx error, classifying it as transient or permanent.
    pub fn db(side: Side, context: impl Into<String>, err: &sea_orm::sqlx::Error) -> Self {
        Error::Database {
            side,
            context: context.into(),
            message: if is_tls_failure(err) {
                // A TLS failure says what to fix (the CA, the mode, the host name).
                format!("{}; {}", describe(err), tls_hint(side))
            } else {
                describe(err)
            },
            code: match err {
                sea_orm::sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            },
            transient: is_transient(err),
        }
    }

    /// Wraps a sea-orm error the same way.
    pub fn orm(side: Side, context: impl Into<String>, err: sea_orm::DbErr) -> Self {
        use sea_orm::{DbErr, RuntimeErr};
        match err {
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => Error::db(side, context, &e),
            other => Error::Database {
                side,
                context: context.into(),
                transient: matches!(other, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)),
                message: other.to_string(),
                code: None,
            },
        }
    }

    /// The same error with more context in front of its message (databases), or as is.
    pub fn context(self, more: &str) -> Self {
        match self {
            Error::Database {
                side,
                context,
                message,
                code,
                transient,
            } => Error::Database {
                side,
                context: format!("{more}: {context}"),
                message,
                code,
                transient,
            },
            other => other,
        }
    }
}

/// For `map_err`: a target (PostgreSQL) error, with what was being done.
pub fn on_target(context: impl Into<String>) -> impl FnOnce(sea_orm::sqlx::Error) -> Error {
    let context = context.into();
    move |e| Error::db(Side::Target, context, &e)
}

/// Text of a sqlx error, with the SQLSTATE for database errors.
fn describe(err: &sea_orm::sqlx::Error) -> String {
    match err {
        sea_orm::sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

/// An untrusted certificate, a name that does not match, a server without TLS: sqlx
/// reports the first two as I/O errors carrying rustls's.
fn is_tls_failure(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        E::Tls(e) => e.downcast_ref::<std::io::Error>().is_none(),
        E::Io(e) => e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

fn is_transient(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    if is_tls_failure(err) {
        return false;
    }
    match err {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        // A connection cut during the handshake.
        E::Tls(_) => true,
        E::Protocol(msg) => msg.contains("connection") || msg.contains("closed"),
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            matches!(
                code.as_ref(),
                // PostgreSQL: serialization failure, deadlock, connection exceptions,
                // admin/crash shutdown, cannot connect now, too many connections.
                "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                    | "08000" | "08003" | "08006" | "08001" | "08004"
                    // MySQL/MariaDB report SQLSTATE HY000 / 08S01 for many things; the
                    // message tells lock waits and shutdowns apart.
                    | "08S01" | "40000"
            ) || {
                let m = db.message().to_ascii_lowercase();
                [
                    "lock wait timeout",
                    "deadlock found",
                    "shutdown",
                    "lost connection",
                    "gone away",
                    "terminating connection",
                    "too many connections",
                ]
                .iter()
                .any(|needle| m.contains(needle))
            }
        }
        _ => false,
    }
}
/// What to do about a TLS failure, to follow its message.
pub fn tls_hint(side: Side) -> &'static str {
    match side {
        Side::Source => "TLS failed: if the server's certificate is not trusted, give its CA with ssl-ca=/path/ca.pem in the source URL or install it in the system's store (update-ca-certificates); ssl-mode=REQUIRED encrypts without verifying; a server without TLS needs ssl-mode=PREFERRED or DISABLED",
        Side::Target => "TLS failed: if the server's certificate is not trusted, give its CA with sslrootcert=/path/ca.pem in the target URL or install it in the system's store (update-ca-certificates); verify-full also needs the URL's host to match the certificate; sslmode=require encrypts without verifying; a server without TLS needs sslmode=prefer or disable",
    }
}
