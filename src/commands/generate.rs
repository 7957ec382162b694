//! `generate`: demo orders into the source at a rate (the generator actor).

use std::future::Future;

use actix::Actor;
use tokio::sync::oneshot;

use super::{orm_connect, shutdown_on};
use crate::config::Settings;
use crate::error::{Error, Result, Side};
use crate::pipeline::generator::{Generator, GeneratorReport, StopGenerator};
use crate::retry::connecting;
use crate::shutdown::Shutdown;

/// `generate`: insert demo orders at `rate` rows/s until `total` or `stop`.
pub fn generate(
    settings: &Settings,
    rate: f64,
    total: Option<u64>,
    stop: impl Future<Output = ()> + 'static,
) -> Result<GeneratorReport> {
    let settings = settings.clone();
    actix::System::new().block_on(async move {
        let shutdown = Shutdown::new();
        shutdown_on(stop, &shutdown, "stopping the generator");
        let db = connecting(&settings, &shutdown, || {
            orm_connect(&settings.source.url, Side::Source)
        })
        .await?;
        let (tx, rx) = oneshot::channel();
        let generator = Generator::new(db, rate, total, tx).start();
        let s = shutdown.clone();
        actix::spawn(async move {
            s.requested_async().await;
            generator.do_send(StopGenerator);
        });
        let mut report = rx
            .await
            .map_err(|_| Error::Other("the generator stopped without a report".into()))?;
        match report.error.take() {
            Some(e) => Err(e),
            None => Ok(report),
        }
    })
}
