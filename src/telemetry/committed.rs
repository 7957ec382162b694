//! The positions this process committed: each table's last, by table name (see
//! [`committed_here`]).

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

/// The position each table's last commit in this process stored, by table name: positions
/// this process read from the source itself. A binlog stream starting again from one (a new
/// round: a table a pattern took, a `sluice snapshot` request) needs no check that the
/// server's binlog holds it, which costs MariaDB a read of the binlog file up to it.
static COMMITTED: LazyLock<Mutex<BTreeMap<String, crate::model::Position>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// `table`'s batch committed `position` (see [`COMMITTED`]).
pub(super) fn note(table: &str, position: &crate::model::Position) {
    let mut c = COMMITTED.lock().unwrap_or_else(|p| p.into_inner());
    match c.get_mut(table) {
        Some(p) => p.clone_from(position),
        None => {
            c.insert(table.to_string(), position.clone());
        }
    }
}

/// The positions this process committed last, one per table (see [`COMMITTED`]).
pub fn committed_here() -> Vec<crate::model::Position> {
    COMMITTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect()
}
