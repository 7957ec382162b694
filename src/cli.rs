//! The command line (a contract: see the book's Quick start › Commands, `docs/src/quick-start.md`,
//! and the README's Commands section, which repeats it).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Stream new rows from MySQL/MariaDB into PostgreSQL, continuously, with no row lost or duplicated",
    after_help = "Defaults need no flags on a machine with local servers: source mysql://root@127.0.0.1:3306/test, target postgres://postgres@127.0.0.1:5432/test.\nPrecedence: flags, then environment, then the config file, then defaults."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Source URL, mysql://user:password@host:port/database.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "SLUICE_SOURCE_URL",
        hide_env_values = true
    )]
    pub source: Option<String>,
    /// Target URL, postgres://user:password@host:port/database.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "SLUICE_TARGET_URL",
        hide_env_values = true
    )]
    pub target: Option<String>,
    /// Log line format (stderr). Filter with RUST_LOG, e.g. RUST_LOG=sluice=debug.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the demo source table, the target tables and the state table (idempotent).
    Migrate,
    /// Insert demo orders into the source.
    Generate {
        /// Rows per second.
        #[arg(long, default_value_t = 10.0, value_parser = positive_rate)]
        rate: f64,
        /// Stop after this many rows (default: run until Ctrl-C).
        #[arg(long)]
        total: Option<u64>,
    },
    /// Replicate continuously until SIGINT/SIGTERM. Several `run` processes of one pipeline
    /// share its tables ([cluster]); with [verify] interval_s, compare in the background.
    Run {
        /// Catch up to the end of the source as of start, then exit 0.
        #[arg(long)]
        once: bool,
    },
    /// Per table: watermark, rows replicated, lag, last commit, last error, owner, last
    /// background verify, a copy's progress (rows, chunks, time left); and the pipeline's
    /// members.
    Status {
        /// Print JSON (what GET /status answers).
        #[arg(long)]
        json: bool,
    },
    /// Compare source and target by chunked checksums; exit 1 on any difference.
    Verify {
        /// Only this configured table (default: every configured table).
        #[arg(long, value_name = "T")]
        table: Option<String>,
        /// Rewrite the rows that differ: upsert missing and different ones, delete extra ones.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy tables again from the source while replication goes on: the run that holds each
    /// takes the request within a second (or at its start), empties its target table and
    /// copies it beside the stream of the other tables.
    Snapshot {
        /// A table the pipeline replicates (repeat for more).
        #[arg(long = "table", value_name = "T", required = true)]
        tables: Vec<String>,
    },
    /// First look: migrate, generate, replicate, and print one line a second.
    Demo {
        /// Generated rows per second.
        #[arg(long, default_value_t = 100.0, value_parser = positive_rate)]
        rate: f64,
    },
}

fn positive_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if r.is_finite() && r > 0.0 && r <= 1_000_000.0 {
        Ok(r)
    } else {
        Err(format!(
            "rate must be above 0 and at most 1000000 rows/s, not {s}"
        ))
    }
}
