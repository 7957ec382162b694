//! The commands, one module each: each builds what it needs from [`Settings`] and runs it
//! to the end. Each takes its shutdown as a future (the binary passes its signal handler;
//! tests may pass anything): the library never installs signal handlers nor exits the
//! process. `status` and `verify` live with what they read ([`crate::status`],
//! [`crate::verify`]).
//!
//! - [`migrate`]: the demo table on both sides, the state tables on the target.
//! - [`generate`]: demo orders into the source at a rate.
//! - [`run`]: rounds of replication (see [`crate::round`]) until stopped.
//! - [`demo`]: migrate, generate and replicate, a line a second.
//! - [`snapshot`]: asks for tables to be copied again while replication goes on.

mod demo;
mod generate;
mod migrate;
mod run;
mod snapshot;

use std::future::Future;
use std::time::Duration;

use sea_orm::{Database, DatabaseConnection};
use tracing::info;

pub use demo::demo;
pub use generate::generate;
pub use migrate::migrate;
pub use run::run;
pub use snapshot::snapshot;

use crate::config::{host_port, Settings};
use crate::error::{Error, Result, Side};
use crate::redact::redact;
use crate::retry::connecting;
use crate::shutdown::Shutdown;

/// Connects sea-orm to one side (one connection), with an error that names host:port and
/// never the password.
pub(crate) async fn orm_connect(url: &str, side: Side) -> Result<DatabaseConnection> {
    let mut opts = sea_orm::ConnectOptions::new(url.to_string());
    opts.max_connections(1)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(opts).await.map_err(|e| {
        let mut err = Error::orm(
            side,
            format!("cannot connect to {} (URL {})", host_port(url), redact(url)),
            e,
        );
        if let Error::Database { message, .. } = &mut err {
            // sea-orm's messages can quote the URL; make sure no password leaks through.
            if let Some(pw) = url::Url::parse(url)
                .ok()
                .and_then(|u| u.password().map(str::to_string))
            {
                *message = message.replace(&pw, "***");
            }
        }
        err
    })
}

/// Creates (or brings up to date) the `sluice` schema's tables on the target.
pub(crate) async fn apply_state_schema(settings: &Settings, shutdown: &Shutdown) -> Result<()> {
    let target = connecting(settings, shutdown, || {
        orm_connect(&settings.target.url, Side::Target)
    })
    .await?;
    let r = migration::run_on_target(&target, &migration::State)
        .await
        .map_err(|e| Error::orm(Side::Target, "creating the sluice state tables", e));
    target.close().await.ok();
    r
}

/// Requests `shutdown` when `stop` resolves (on the current actix System).
pub(crate) fn shutdown_on(
    stop: impl Future<Output = ()> + 'static,
    shutdown: &Shutdown,
    what: &'static str,
) {
    let s = shutdown.clone();
    actix::spawn(async move {
        stop.await;
        if s.request() {
            info!("{what}");
        }
    });
}
