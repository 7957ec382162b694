//! sluice streams changes from a MySQL/MariaDB database into PostgreSQL, continuously and
//! in near real time, with no row lost or duplicated.
//!
//! A source hands out changes of its tables with the position each table is at after them;
//! a sink applies them and stores the positions in the same transaction. Between them, per
//! lane of tables, a poller, a batcher and a writer actor stream the changes over bounded
//! channels.
//!
//! # Layout
//! - [`main`](../sluice/index.html): thin binary (command line, logging, signals, exit code).
//! - [`cli`]: the command line (clap).
//! - [`config`]: typed settings from file, environment and flags; validation; passwords.
//! - [`redact`]: secrets masked in everything printed (the log writer, errors).
//! - [`error`]: the error type, retryable or not, its exit code.
//! - [`retry`]: the one retry policy (backoff with jitter, deadlines, shutdown-aware).
//! - [`shutdown`]: the shutdown handle blocking threads and async tasks share.
//! - [`model`]: the neutral table model, `Change { op, row }`, the opaque `Position`.
//! - [`value`]: row values and their sizes.
//! - [`source`]: the `Source` contract; [`source::mysql`] (connect, introspect, read forms)
//!   and [`source::poll`] (keyset polling).
//! - [`sink`]: the `Sink` contract; [`sink::postgres`] (types, DDL, COPY, writer, initial load).
//! - [`state`]: positions, ownership epochs and the advisory lock, the group's members
//!   (`state::members`), dead letters.
//! - [`pipeline`]: the actors (poller, batcher, writer, supervisor, generator) and their
//!   messages, and the byte budget.
//! - [`telemetry`]: the per-table stats store and metric names; Prometheus rendering.
//! - [`helpers`]: the one cached connection to each side that probes, status and progress share.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/status` (actix-web).
//! - [`status`]: per-table stored state and lag, for `status` and `/status`.
//! - [`progress`]: progress bars on a terminal, periodic log lines otherwise.
//! - [`verify`]: chunked checksum comparison of source and target, and `--repair`; the
//!   background comparison `run` makes (`verify::check`).
//! - [`tls`]: whether connections are encrypted (warned when not, to another host); TLS hints.
//! - [`failpoint`]: crash injection for tests (`SLUICE_FAILPOINT`).
//! - `testing` (unit tests, and the `testing` feature): in-memory doubles of the source and
//!   the sink, and a lane wired around them.
//! - [`app`]: the commands (`migrate`, `generate`, `run`, `status`, `demo`), each taking
//!   its shutdown as a future.

pub mod cli;
pub mod commands;
pub mod config;
pub mod conn;
pub mod error;
pub mod failpoint;
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
