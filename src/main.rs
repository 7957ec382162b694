//! Thin binary: parse the command line, set up logging, hand over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command, LogFormat};
use sluice::config::{Overrides, Settings};
use sluice::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=error,sea_orm_migration=warn,sea_orm=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn execute(cli: Cli) -> Result<(), Error> {
    let overrides = Overrides {
        source_url: cli.source,
        target_url: cli.target,
    };
    let settings = Settings::load(cli.config.as_deref(), &overrides)?;
    match cli.command {
        Command::Migrate => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(e.to_string()))?;
            rt.block_on(sluice::app::migrate(&settings))?;
            println!(
                "migrated: source orders, target {}.orders and sluice.replication_state",
                settings.target_schema
            );
        }
        Command::Generate { rate, total } => {
            let r = sluice::app::generate(&settings, rate, total)?;
            let secs = r.elapsed.as_secs_f64();
            println!(
                "inserted {} orders in {secs:.1} s ({:.0} rows/s)",
                r.inserted,
                r.inserted as f64 / secs.max(1e-9)
            );
        }
        Command::Run { once } => {
            let started = std::time::Instant::now();
            let outcome = sluice::app::run(settings, once)?;
            if let Some((msg, code)) = outcome.failure {
                return Err(if code == 2 {
                    Error::Schema(msg)
                } else {
                    Error::Other(msg)
                });
            }
            let total: u64 = outcome.tables.values().map(|s| s.rows_written).sum();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replicated {total} rows in {secs:.2} s ({:.0} rows/s)",
                total as f64 / secs.max(1e-9)
            );
            for (table, s) in &outcome.tables {
                println!(
                    "  {table}: {} rows in {} batches",
                    s.rows_written, s.batches
                );
                if s.dead_lettered > 0 {
                    println!(
                        "  {table}: {} rows refused by PostgreSQL, kept in sluice.dead_letters",
                        s.dead_lettered
                    );
                }
            }
        }
        Command::Status { json } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(e.to_string()))?;
            let status = rt.block_on(sluice::status::collect(&settings))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                if status.tables.is_empty() {
                    println!("no table has been replicated yet");
                }
                for t in &status.tables {
                    println!("{}", sluice::status::describe(t));
                }
                if let Some(e) = &status.source_error {
                    println!("(lag unknown: {e})");
                }
            }
        }
        Command::Verify {
            table,
            repair,
            json,
        } => {
            let reports = sluice::verify::verify(&settings, table.as_deref(), repair)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reports).unwrap_or_default()
                );
            } else {
                for r in &reports {
                    println!("{}", sluice::verify::describe(r));
                }
            }
            if reports.iter().any(|r| !r.ok()) {
                return Err(Error::Other(
                    "verify found differences (run `sluice verify --repair` to fix them)".into(),
                ));
            }
        }
        Command::Demo { rate } => sluice::app::demo(settings, rate)?,
    }
    Ok(())
}
