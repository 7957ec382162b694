//! sluice streams new rows from a MySQL/MariaDB database into PostgreSQL, continuously and
//! in near real time, with no row lost or duplicated.
//!
//! A poller reads source rows past a persisted watermark (keyset on cursor + primary key)
//! and streams them over bounded channels to a batcher and a PostgreSQL writer, which
//! upserts each batch and advances the watermark in the same transaction.
//!
//! # Layout
//! - [`cli`]: the command line (clap).
//! - [`config`]: typed settings from file, environment and flags; validation; redaction.
//! - [`error`]: the error type, retryable or not, and its exit code.
//! - [`failpoint`]: crash injection for tests (`SLUICE_FAILPOINT`).
//! - [`value`]: row values, COPY text encoding, watermark JSON.
//! - [`source`]: MySQL introspection, type mapping and the keyset poller.
//! - [`sink`]: PostgreSQL target tables, watermark storage and the batch writer.
//! - [`pipeline`]: the actors — generator, poller, batcher, writer, supervisor.
//! - [`verify`]: chunked checksum comparison of source and target, and `--repair`.
//! - [`telemetry`]: metric names, the in-process registry, Prometheus rendering.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/status` (actix-web).
//! - [`status`]: per-table state and lag, for `status` and `/status`.
//! - [`progress`]: progress bars on a terminal, periodic log lines otherwise.
//! - [`app`]: the commands (`migrate`, `generate`, `run`, `status`, `demo`).

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod pipeline;
pub mod progress;
pub mod sink;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod value;
pub mod verify;
