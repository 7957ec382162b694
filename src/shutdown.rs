//! Shutdown, seen by every stage: one handle that blocking threads and async tasks can both
//! wait on.
//!
//! A run's shutdown comes from outside the library as a future (the binary's signal
//! handler, or a test); [`Shutdown::request`] is what that future's completion triggers.
//! From then on no stage starts a new read or a new retry; work in flight may finish for
//! [`GRACE`], after which database calls still waiting are abandoned (nothing is lost:
//! whatever did not commit is read again on the next start).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// How long work in flight may go on after shutdown was asked for.
pub const GRACE: Duration = Duration::from_secs(3);

struct Inner {
    /// Dropped at shutdown: the receivers then see `Disconnected`, which wakes blocking
    /// waits and crossbeam `select!`s.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    watch: tokio::sync::watch::Sender<bool>,
    at: OnceLock<Instant>,
}

/// A cloneable handle on one shutdown.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Shutdown(Arc::new(Inner {
            tx: Mutex::new(Some(tx)),
            rx,
            watch: tokio::sync::watch::channel(false).0,
            at: OnceLock::new(),
        }))
    }

    /// Asks every stage to stop. Returns true the first time.
    pub fn request(&self) -> bool {
        let first = self.0.at.set(Instant::now()).is_ok();
        self.0.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.0.watch.send_replace(true);
        first
    }

    pub fn requested(&self) -> bool {
        matches!(self.0.rx.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// The receiver that disconnects at shutdown, for crossbeam `select!`.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.0.rx
    }

    /// Blocks up to `d`, waking early on shutdown. Returns true when shutdown was asked for.
    pub fn wait(&self, d: Duration) -> bool {
        matches!(
            self.0.rx.recv_timeout(d),
            Err(RecvTimeoutError::Disconnected)
        )
    }

    /// Resolves once shutdown is asked for.
    pub async fn requested_async(&self) {
        let mut rx = self.0.watch.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// When the grace period ends, once shutdown was asked for.
    pub fn grace_deadline(&self) -> Option<Instant> {
        self.0.at.get().map(|at| *at + GRACE)
    }

    /// Resolves [`GRACE`] after shutdown was asked for: the moment to abandon database calls
    /// still in flight.
    pub async fn grace_over(&self) {
        self.requested_async().await;
        let at = self.0.at.get().copied().unwrap_or_else(Instant::now);
        tokio::time::sleep_until((at + GRACE).into()).await;
    }

    /// Sleeps `d` (async), waking early on shutdown. Returns true when shutdown was asked for.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.requested(),
            _ = self.requested_async() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_blocking_and_async_waiters() {
        let s = Shutdown::new();
        assert!(!s.requested());
        assert!(!s.wait(Duration::from_millis(1)));
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait(Duration::from_secs(60)));
        assert!(s.request());
        assert!(!s.request());
        assert!(t.join().unwrap());
        assert!(s.requested());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            s.requested_async().await;
            assert!(s.sleep(Duration::from_secs(60)).await);
        });
    }
}
