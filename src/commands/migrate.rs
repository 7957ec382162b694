//! `migrate`: the demo `orders` table on the source and the target, and sluice's state
//! tables on the target.

use tracing::info;

use super::{apply_state_schema, orm_connect};
use crate::config::Settings;
use crate::error::{Error, Result, Side};
use crate::redact::redact;
use crate::retry::connecting;
use crate::shutdown::Shutdown;

/// `migrate`: the demo table on both sides and the state table on the target.
pub async fn migrate(settings: &Settings, shutdown: &Shutdown) -> Result<()> {
    let source = connecting(settings, shutdown, || {
        orm_connect(&settings.source.url, Side::Source)
    })
    .await?;
    migration::create_source_demo(&source)
        .await
        .map_err(|e| Error::orm(Side::Source, "creating the demo orders table", e))?;
    source.close().await.ok();
    apply_state_schema(settings, shutdown).await?;
    let target = connecting(settings, shutdown, || {
        orm_connect(&settings.target.url, Side::Target)
    })
    .await?;
    migration::run_on_target(
        &target,
        &migration::TargetDemo {
            schema: settings.target.schema.clone(),
        },
    )
    .await
    .map_err(|e| Error::orm(Side::Target, "creating the demo orders table", e))?;
    target.close().await.ok();
    info!(
        source = %redact(&settings.source.url),
        target = %redact(&settings.target.url),
        "migrated: orders on the source, {}.orders and sluice.replication_state on the target",
        settings.target.schema
    );
    Ok(())
}
