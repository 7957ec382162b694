//! sluice streams changes from a MySQL/MariaDB database into PostgreSQL, continuously and
//! in near real time, with no row lost or duplicated.
//!
//! A source hands out changes of its tables with the position each table is at after them;
//! a sink applies them and stores the positions in the same transaction. Between them, per
//! lane of tables, a poller, a batcher and a writer actor stream the changes over bounded
//! channels.
//!
//! # Layout
//! From the top floor down; a module uses only those below it (`tests/layers.rs` checks that
//! no import circle exists; `docs/src/internals/architecture.md`, in the book, draws the house).
//! - [`main`](../sluice/index.html): thin binary (command line, logging, signals, exit code).
//! - [`commands`]: one module per command (`migrate`, `generate`, `run`, `demo`, `snapshot`),
//!   each taking its shutdown as a future.
//! - [`round`]: one round of `run`: plan the tables, claim this member's share, prepare them.
//! - [`http`]: the status page `/`, `/metrics`, `/healthz`, `/readyz`, `/status` (actix-web).
//! - [`status`]: per-table stored state and lag, for `status` and `/status`.
//! - [`progress`]: progress bars on a terminal, periodic log lines otherwise.
//! - [`verify`]: chunked checksum comparison of source and target, and `--repair`; the
//!   background comparison `run` makes (`verify::check`).
//! - [`pipeline`]: the actors (poller, batcher, writer, supervisor, generator) and their
//!   messages, and the byte budget; handed its sinks, it knows no database.
//! - [`source`]: the `Source` contract; [`source::capture`] (the capture mode and stored
//!   positions as the rest asks them), [`source::mysql`] (introspection, read forms),
//!   [`source::poll`] (keyset polling), [`source::binlog`] (snapshot, then the binlog).
//! - [`sink`]: the `Sink` contract; [`sink::postgres`] (types, DDL, COPY, the table writer,
//!   the initial load, readying a table).
//! - [`state`]: positions, shape history, ownership epochs and the advisory lock
//!   (`state::ownership`), the group's members (`state::members`), dead letters.
//! - [`telemetry`]: metric names, the per-table stats and their handles, the registry, the
//!   Prometheus rendering.
//! - [`conn`]: connections to both sides, and the helpers' pair shared by handle.
//! - [`retry`]: the one retry policy (backoff with jitter, deadlines, shutdown-aware).
//! - [`tls`]: whether connections are encrypted (warned when not, to another host).
//! - [`config`]: typed settings by section from file, environment and flags; each section
//!   validates itself; passwords.
//! - [`model`]: the neutral table model, `Change { op, row }`, the opaque `Position`.
//! - [`value`]: row values and their sizes.
//! - [`error`]: the error type, retryable or not, its exit code; TLS hints.
//! - [`redact`]: secrets masked in everything printed (the log writer, errors).
//! - [`urls`]: what a connection URL names (host:port, database).
//! - [`shutdown`]: the shutdown handle blocking threads and async tasks share.
//! - [`failpoint`]: crash injection for tests (`SLUICE_FAILPOINT`).
//! - [`cli`]: the command line (clap).
//! - `testing` (unit tests, and the `testing` feature): in-memory doubles of the source and
//!   the sink, and a lane wired around them.

pub mod cli;
pub mod commands;
pub mod config;
pub mod conn;
pub mod error;
pub mod failpoint;
pub mod filter;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod redact;
pub mod retry;
pub mod round;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod urls;
pub mod value;
pub mod verify;
