//! The process's byte budget for rows in flight: a poller takes a [`Lease`] on the bytes of
//! each change set it reads before passing it on, and the lease travels with the rows until
//! their batch is committed or dropped, when it is returned. A poller that finds the budget
//! spent waits, so however wide the rows and however many lanes read at once, the rows held
//! between reading and committing stay within the budget (plus one page per lane being
//! read, and one change set when a single one is larger than the whole budget).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::shutdown::Shutdown;

#[derive(Debug)]
pub struct Budget {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Takes `bytes`, waiting while they would not fit (a request larger than the whole
    /// budget waits until nothing else is held). `None` when shutdown was asked for while
    /// waiting.
    pub fn acquire(self: &Arc<Self>, bytes: usize, shutdown: &Shutdown) -> Option<Lease> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + bytes > self.max {
            if shutdown.requested() {
                return None;
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *used += bytes;
        Some(Lease {
            budget: Some(self.clone()),
            bytes,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Bytes held from a [`Budget`], returned when dropped.
#[derive(Debug, Default)]
pub struct Lease {
    budget: Option<Arc<Budget>>,
    bytes: usize,
}

impl Lease {
    /// Adds `other`'s bytes to this lease (both from the same budget).
    pub fn merge(&mut self, mut other: Lease) {
        if self.budget.is_none() {
            self.budget = other.budget.take();
        } else {
            other.budget = None;
        }
        self.bytes += std::mem::take(&mut other.bytes);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            if self.bytes > 0 {
                let mut used = b.used.lock().unwrap_or_else(|p| p.into_inner());
                *used = used.saturating_sub(self.bytes);
                b.freed.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_return_their_bytes_and_waiters_wake() {
        let b = Budget::new(100);
        let s = Shutdown::new();
        let mut a = b.acquire(60, &s).unwrap();
        let c = b.acquire(30, &s).unwrap();
        a.merge(c);
        assert_eq!((a.bytes(), b.used()), (90, 90));
        let b2 = b.clone();
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || b2.acquire(50, &s2).map(|l| l.bytes()));
        std::thread::sleep(Duration::from_millis(100));
        drop(a);
        assert_eq!(waiter.join().unwrap(), Some(50));
        assert_eq!(b.used(), 0);
        // Larger than the whole budget: granted when nothing else is held.
        let big = b.acquire(500, &s).unwrap();
        assert_eq!(b.used(), 500);
        s.request();
        assert!(b.acquire(1, &s).is_none());
        drop(big);
    }
}
