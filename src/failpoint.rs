//! Crash injection for tests: `SLUICE_FAILPOINT=<name>[:<n>]` makes the process abort, as
//! `kill -9` would (no destructor, no flush, no rollback), the `n`th time (default: first)
//! it reaches the named point. Unset, a failpoint costs one relaxed atomic load.
//!
//! Only in builds with the `failpoints` cargo feature, which the tests turn on (the package
//! is its own dev-dependency with it); a release build ignores `SLUICE_FAILPOINT` and says
//! so at start.
//!
//! Points: `after_read` (a page was read, nothing sent on), `before_commit` (a batch and its
//! watermark were written, the transaction is not committed), `after_commit` (committed, not
//! yet reported), `before_key_commit` (an initial load's deferred primary key is built, the
//! transaction is not committed), `after_shape_commit` (a batch that followed a schema change
//! of the source committed, with the target's DDL).
//!
//! Modes, which change behaviour instead of aborting ([`is`]): `chunk_late` (binlog capture
//! beside the stream: after each chunk is read, the stream reads on past the chunk's position
//! before the chunk is applied, as when the binlog had the next transactions before the
//! engine committed them); `lost_after_read:<n>` (polling: the `n`th read that returns rows
//! loses its connection right after, at the check of the table's definition, as when the
//! server went down at that moment).

#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;

#[cfg(feature = "failpoints")]
struct Armed {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

#[cfg(feature = "failpoints")]
fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("SLUICE_FAILPOINT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is the armed failpoint and this is its `n`th hit.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if let Some(a) = armed() {
        if a.name == name && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.nth {
            eprintln!("failpoint {name} hit: aborting");
            std::process::abort();
        }
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Whether `name` is armed and this is its `n`th hit (a one-time fault to simulate).
#[cfg(feature = "failpoints")]
pub fn trip(name: &str) -> bool {
    armed().is_some_and(|a| a.name == name && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.nth)
}

/// Without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn trip(_name: &str) -> bool {
    false
}

/// Whether the mode `name` is armed.
#[cfg(feature = "failpoints")]
pub fn is(name: &str) -> bool {
    armed().is_some_and(|a| a.name == name)
}

/// Without the `failpoints` feature: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn is(_name: &str) -> bool {
    false
}

/// Warns when `SLUICE_FAILPOINT` is set in a build that ignores it.
pub fn warn_if_ignored() {
    if cfg!(not(feature = "failpoints")) && std::env::var_os("SLUICE_FAILPOINT").is_some() {
        tracing::warn!("SLUICE_FAILPOINT is ignored: this build has no failpoints (the `failpoints` cargo feature, for tests)");
    }
}
