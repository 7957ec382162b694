//! Thin binary: parse the command line, set up logging and signals, hand over to the
//! library, and turn its outcome into an exit code. Only this file installs signal handlers
//! and exits the process.

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sluice::cli::{Cli, Command, LogFormat};
use sluice::config::{Overrides, Settings};
use sluice::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    sluice::failpoint::warn_if_ignored();
    match execute(cli) {
        Ok(code) => code,
        Err(Error::Shutdown) => {
            eprintln!("stopped by a signal");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The message may quote a URL or a configuration line: masked like the logs.
            eprintln!("error: {}", sluice::redact::redact_text(&e.to_string()));
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
        // Every line, the libraries' own included, with its secrets masked.
        .with_writer(sluice::redact::Stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGINT/SIGTERM: the first resolves the returned future (the library then stops
/// gracefully); a second one exits at once with 130 (nothing is lost: what was not
/// committed is read again on the next start). The handlers are installed before this
/// returns.
fn signals() -> impl Future<Output = ()> + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can always be built");
    let handlers = {
        let _guard = rt.enter();
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)))
    };
    match handlers {
        Ok((mut term, mut int)) => {
            let spawned = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    rt.block_on(async move {
                        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                        let _ = tx.send(());
                        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                        eprintln!(
                            "second signal: exiting now; uncommitted rows will be read again on restart"
                        );
                        std::process::exit(130);
                    })
                });
            if let Err(e) = spawned {
                eprintln!(
                    "warning: cannot watch for signals ({e}); SIGTERM will stop sluice at once"
                );
            }
        }
        Err(e) => eprintln!(
            "warning: cannot install signal handlers ({e}); SIGTERM will stop sluice at once"
        ),
    }
    async move {
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn execute(cli: Cli) -> Result<ExitCode, Error> {
    let overrides = Overrides {
        source_url: cli.source,
        target_url: cli.target,
    };
    let settings = Settings::load(cli.config.as_deref(), &overrides)?;
    let stop = signals();
    match cli.command {
        Command::Migrate => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(e.to_string()))?;
            let shutdown = sluice::shutdown::Shutdown::new();
            let s = shutdown.clone();
            rt.block_on(async {
                tokio::select! {
                    r = sluice::commands::migrate(&settings, &shutdown) => r,
                    _ = async { stop.await; s.request(); std::future::pending::<()>().await } => Ok(()),
                }
            })?;
            println!(
                "migrated: source orders, target {}.orders and sluice.replication_state",
                settings.target.schema
            );
        }
        Command::Generate { rate, total } => {
            let r = sluice::commands::generate(&settings, rate, total, stop)?;
            let secs = r.elapsed.as_secs_f64();
            println!(
                "inserted {} orders in {secs:.1} s ({:.0} rows/s)",
                r.inserted,
                r.inserted as f64 / secs.max(1e-9)
            );
        }
        Command::Run { once } => {
            let started = std::time::Instant::now();
            let outcome = sluice::commands::run(settings, once, stop)?;
            let total = outcome.rows_written();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replicated {total} rows in {secs:.2} s ({:.0} rows/s)",
                total as f64 / secs.max(1e-9)
            );
            // Per table; with many tables, only those with something to say.
            let many = outcome.tables.len() > sluice::progress::PER_TABLE_UP_TO;
            for t in &outcome.tables {
                if !many || t.dead_lettered > 0 {
                    println!(
                        "  {}: {} rows in {} batches",
                        t.name, t.rows_written, t.batches
                    );
                }
                if t.dead_lettered > 0 {
                    println!(
                        "  {}: {} rows refused by PostgreSQL, kept in sluice.dead_letters",
                        t.name, t.dead_lettered
                    );
                }
            }
            let failed: Vec<_> = outcome.failures().collect();
            if !failed.is_empty() {
                for t in &failed {
                    let e = t.failed.as_ref().expect("failures have an error");
                    eprintln!("error: table {:?} stopped: {e}", t.name);
                }
                eprintln!(
                    "error: {} of {} tables stopped with an error (see above; `sluice status` shows them too)",
                    failed.len(),
                    outcome.tables.len()
                );
                return Ok(ExitCode::from(1));
            }
        }
        Command::Status { json } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(e.to_string()))?;
            let status = rt.block_on(sluice::status::collect(
                &settings,
                &mut sluice::conn::Helpers::new(),
            ))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
            } else {
                println!("pipeline {}", status.pipeline);
                if status.tables.is_empty() {
                    println!("no table has been replicated yet");
                }
                for t in &status.tables {
                    println!("{}", sluice::status::describe(t));
                }
                if let Some(e) = &status.source_error {
                    println!("(lag unknown: {e})");
                }
                for m in &status.members {
                    println!("{}", sluice::status::describe_member(m));
                }
            }
        }
        Command::Snapshot { tables } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(e.to_string()))?;
            let shutdown = sluice::shutdown::Shutdown::new();
            rt.block_on(sluice::commands::snapshot(&settings, &tables, &shutdown))?;
            println!(
                "asked for a new copy of {}: the run that holds {} empties its target and copies it from the source within a second or so (a run started later, at its start), while the other tables go on; `sluice status` shows the copy",
                tables.join(", "),
                if tables.len() == 1 { "it" } else { "each" }
            );
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
        Command::Demo { rate } => sluice::commands::demo(settings, rate, stop)?,
    }
    Ok(ExitCode::SUCCESS)
}
