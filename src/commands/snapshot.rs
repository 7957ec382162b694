//! `sluice snapshot --table T …`: asks for tables to be copied again from the source while
//! replication goes on. The request is recorded in `sluice.replication_state`; the `run`
//! that holds each table takes it within a second (a `run` started later, at its start):
//! it empties the target table and copies it as a new table, beside the stream of the
//! others (binlog capture on MariaDB) or in its own lane (polling). Rows deleted on the
//! source while nobody looked (a target edited by hand, an old gap) are gone after it.

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::state;

/// Records the request for `tables`; all of them must be tables the pipeline replicates.
pub async fn snapshot(settings: &Settings, tables: &[String], shutdown: &Shutdown) -> Result<()> {
    super::apply_state_schema(settings, shutdown).await?;
    let mut conn = crate::sink::postgres::connect(&settings.target.url, "snapshot").await?;
    let unknown = state::request_snapshot(&mut conn, &settings.pipeline_name, tables).await?;
    if !unknown.is_empty() {
        return Err(Error::Config(format!(
            "pipeline {:?} has never replicated {}: `sluice snapshot` copies again a table the pipeline replicates (`sluice status` lists them); a table it has not replicated yet is copied when `run` first takes it. Nothing was asked for",
            settings.pipeline_name,
            unknown
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}
