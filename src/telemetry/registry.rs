//! The process-wide registry: one [`TableHandle`] per replicated table, the standby flag, and
//! the count of source transactions applied; what metrics, `/readyz`, progress and the run's
//! summary read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use super::table::{TableHandle, TableMetrics};

/// Source transactions applied (binlog capture).
pub(super) static TRANSACTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `n` whole source transactions were committed on the target.
pub fn transactions_applied(n: u64) {
    TRANSACTIONS.fetch_add(n, Ordering::Relaxed);
}

static REGISTRY: LazyLock<Mutex<BTreeMap<String, Arc<TableHandle>>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Binlog events skipped (binlog capture), by type name.
pub(super) static EVENTS_SKIPPED: LazyLock<Mutex<BTreeMap<String, u64>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// A binlog event of type `kind` was skipped. True for the first of its type.
pub fn binlog_event_skipped(kind: &str) -> bool {
    let mut skipped = EVENTS_SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    let n = skipped.entry(kind.to_string()).or_insert(0);
    *n += 1;
    *n == 1
}

/// Tables copied again because their binlog was purged (`on_binlog_gone = "snapshot"`).
pub(super) static BINLOG_GONE: LazyLock<Mutex<BTreeMap<String, u64>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Table `table` is copied again: the binlog file its position is in was purged.
pub fn binlog_gone_copy(table: &str) {
    let mut copies = BINLOG_GONE.lock().unwrap_or_else(|p| p.into_inner());
    *copies.entry(table.to_string()).or_insert(0) += 1;
}

/// Set while this process is a member of its pipeline's group holding no table (a standby).
static STANDBY: AtomicBool = AtomicBool::new(false);

pub fn set_standby(standby: bool) {
    STANDBY.store(standby, Ordering::Relaxed);
}

pub fn standby() -> bool {
    STANDBY.load(Ordering::Relaxed)
}

/// A table's pipeline starts: a fresh handle, registered for metrics.
pub fn register(table: &str) -> Arc<TableHandle> {
    let h = Arc::new(TableHandle::new(table));
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(table.to_string(), h.clone());
    h
}

/// Forgets every table but `tables` (a table a pattern took that is gone is no longer
/// reported, nor counted by `/readyz`).
pub fn keep_only(tables: &[String]) {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|name, _| tables.contains(name));
}

/// A copy of every table's metrics.
pub fn snapshot() -> BTreeMap<String, TableMetrics> {
    let handles: Vec<Arc<TableHandle>> = REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    handles
        .iter()
        .map(|h| (h.name.clone(), h.snapshot()))
        .collect()
}
