//! XA transactions prepared but not yet committed: their changes held, by XA id, until an
//! `XA COMMIT` applies them (in the commit's place in the stream) or an `XA ROLLBACK`
//! discards them.
//!
//! # Positions while one is prepared
//! The held changes live only in memory: a restart loses them, and the binlog holds them
//! only in the prepared group, before the commit. So while any XA transaction is held, no
//! position handed out (the end of a transaction, or an idle table's move) goes past the
//! start of the oldest held one's group: [`Prepared::clamp`]. Transactions committed
//! meanwhile are still applied at once, only the position stored with them stays at that
//! group; a restart reads the binlog again from there, holds the prepared transaction again,
//! and applies the ones after it a second time (row images are whole: applying them again
//! converges on the source's rows, as after a snapshot resumed). Once the last prepared
//! transaction is committed or rolled back, positions move on with the next transaction. A
//! transaction prepared for long keeps positions (and so the binlog a restart reads, and
//! `bytes_behind`) at its group meanwhile; its changes are held in memory whole (they are
//! never handed out in chunks, which would apply them before the commit).

use std::collections::HashMap;

use super::gtid::Xid;
use super::txn::OpenTxn;
use super::BinlogPos;

#[derive(Default)]
pub(super) struct Prepared {
    held: HashMap<Xid, OpenTxn>,
}

impl Prepared {
    /// Holds a transaction that reached its `XA PREPARE`. Prepared again under the same id
    /// (the stream read again from before it): the later reading replaces it.
    pub(super) fn hold(&mut self, xid: Xid, txn: OpenTxn) {
        self.held.insert(xid, txn);
    }

    /// The held transaction `xid`, removed; `None` when its prepare was not read by this
    /// stream.
    pub(super) fn take(&mut self, xid: &Xid) -> Option<OpenTxn> {
        self.held.remove(xid)
    }

    /// `pos`, or the start of the oldest held transaction's group when that is earlier: the
    /// furthest a position may be stored (see the module's doc).
    /// A held transaction read on another server (before a failover) is earlier than any
    /// position of this one.
    pub(super) fn clamp(&self, pos: BinlogPos) -> BinlogPos {
        let earlier = |a: &BinlogPos, b: &BinlogPos| !a.same_server(b) || a < b;
        let oldest = self
            .held
            .values()
            .map(|t| &t.start)
            .reduce(|a, b| if earlier(b, a) { b } else { a });
        match oldest {
            Some(start) if earlier(start, &pos) => start.clone(),
            _ => pos,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_stay_at_the_oldest_prepared_group() {
        let p = |pos| BinlogPos::at("mysql-bin.000001", pos);
        let xid = |g: &[u8]| Xid {
            format: 1,
            gtrid: g.to_vec(),
            bqual: Vec::new(),
        };
        let mut prepared = Prepared::default();
        assert_eq!(prepared.clamp(p(500)), p(500));
        prepared.hold(xid(b"b"), OpenTxn::new(p(300), true));
        prepared.hold(xid(b"a"), OpenTxn::new(p(200), true));
        assert_eq!(prepared.clamp(p(500)), p(200));
        assert_eq!(prepared.clamp(p(100)), p(100));
        assert!(prepared.take(&xid(b"a")).is_some());
        assert_eq!(prepared.clamp(p(500)), p(300));
        assert!(prepared.take(&xid(b"a")).is_none());
        assert!(prepared.take(&xid(b"b")).is_some());
        assert_eq!(prepared.clamp(p(500)), p(500));
        assert_eq!(prepared.len(), 0);
    }
}
