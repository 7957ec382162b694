//! MariaDB's GTID event and the XA transaction ids of the binlog, read from the raw event
//! bytes (mysql_common reads MySQL's GTID event, not MariaDB's).
//!
//! A replica that announces `@mariadb_slave_capability = 4` (MARIA_SLAVE_CAPABILITY_GTID,
//! `connection.rs`) is sent MariaDB's GTID events as they are: each starts an event group,
//! where an older replica got a `BEGIN` query instead (which the server cannot make of the
//! longer GTID event of an XA transaction: ERROR 1236). What MariaDB 10.11 writes:
//! - a transaction: GTID, its rows events, XID (or a `COMMIT` query, non-transactional
//!   tables);
//! - a statement on its own (DDL): GTID with `FL_STANDALONE`, the query;
//! - `XA PREPARE`: GTID with `FL_PREPARED_XA` and the XID, the rows events, an `XA END`
//!   query, an XA_PREPARE_LOG_EVENT (38);
//! - `XA COMMIT` / `XA ROLLBACK` of a prepared one: GTID with `FL_STANDALONE |
//!   FL_COMPLETED_XA` and the XID, the query (`XA COMMIT X'7831',X'',1`);
//! - `XA COMMIT ... ONE PHASE`: an ordinary transaction (GTID, rows, XID).

/// `Gtid_log_event` flags (`sql/log_event.h`).
pub(super) const FL_STANDALONE: u8 = 1;
pub(super) const FL_GROUP_COMMIT_ID: u8 = 2;
pub(super) const FL_PREPARED_XA: u8 = 64;
pub(super) const FL_COMPLETED_XA: u8 = 128;

/// MariaDB's GTID_EVENT.
pub(super) const MARIADB_GTID_EVENT: u8 = 162;

/// An XA transaction id: its format id, global transaction id and branch qualifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Xid {
    pub format: u32,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

impl std::fmt::Display for Xid {
    /// As the binlog's queries write it: `X'7831',X'',1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format
        )
    }
}

/// What sluice reads of a MariaDB GTID event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Gtid {
    pub domain: u32,
    pub seq_no: u64,
    pub flags: u8,
    /// The XA transaction, for a group with `FL_PREPARED_XA` or `FL_COMPLETED_XA`.
    pub xid: Option<Xid>,
}

impl Gtid {
    /// Reads the event's body (after the common header, without the checksum): sequence
    /// number (8 bytes), domain id (4), flags (1); with `FL_GROUP_COMMIT_ID` the commit id
    /// (8, read past); with an XA flag the format id (4), the lengths of the global id and
    /// branch qualifier (1 each) and both. Whatever follows (extra flags) is not needed.
    pub(super) fn read(data: &[u8]) -> Option<Gtid> {
        let seq_no = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
        let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
        let flags = *data.get(12)?;
        let mut at = 13;
        if flags & FL_GROUP_COMMIT_ID != 0 {
            data.get(at..at + 8)?;
            at += 8;
        }
        let xid = if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
            let format = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
            let g = usize::from(*data.get(at + 4)?);
            let b = usize::from(*data.get(at + 5)?);
            let ids = data.get(at + 6..at + 6 + g + b)?;
            Some(Xid {
                format,
                gtrid: ids[..g].to_vec(),
                bqual: ids[g..].to_vec(),
            })
        } else {
            None
        };
        Some(Gtid {
            domain,
            seq_no,
            flags,
            xid,
        })
    }

    /// A group of one statement, with no XID or `COMMIT` after it.
    pub(super) fn standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }

    /// The group is an XA transaction's, up to its `XA PREPARE`.
    pub(super) fn prepared_xa(&self) -> bool {
        self.flags & FL_PREPARED_XA != 0
    }
}

/// An XA_PREPARE_LOG_EVENT's body: one-phase (1 byte), format id (4), lengths of the
/// global id and branch qualifier (4 each), both. Returns the id and whether it is a
/// one-phase commit (MySQL writes `XA COMMIT ... ONE PHASE` so; MariaDB as a plain
/// transaction).
pub(super) fn xa_prepare(data: &[u8]) -> Option<(Xid, bool)> {
    let one_phase = *data.first()? != 0;
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(i..i + 4)?.try_into().ok()?))
    };
    let format = u32_at(1)?;
    let g = usize::try_from(u32_at(5)?).ok()?;
    let b = usize::try_from(u32_at(9)?).ok()?;
    let ids = data.get(13..13usize.checked_add(g)?.checked_add(b)?)?;
    Some((
        Xid {
            format,
            gtrid: ids[..g].to_vec(),
            bqual: ids[g..].to_vec(),
        },
        one_phase,
    ))
}

/// What an XA statement of the binlog does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum XaStatement {
    /// `XA START`: MySQL's start of an XA transaction's group (MariaDB's GTID says it).
    Start,
    /// `XA END`: inside the group, nothing to do.
    End,
    Commit(Xid),
    Rollback(Xid),
}

/// Reads an XA statement as the binlog writes it (`XA COMMIT X'7831',X'',1`); `None` for any
/// other statement, or an XA COMMIT/ROLLBACK whose id is not in that form.
pub(super) fn xa_statement(sql: &str) -> Option<XaStatement> {
    let words: Vec<&str> = sql.splitn(3, char::is_whitespace).collect();
    if words.len() < 2 || !words[0].eq_ignore_ascii_case("XA") {
        return None;
    }
    let rest = words.get(2).copied().unwrap_or("");
    match words[1].to_ascii_uppercase().as_str() {
        "START" | "BEGIN" => Some(XaStatement::Start),
        "END" => Some(XaStatement::End),
        "COMMIT" => xid_text(rest).map(XaStatement::Commit),
        "ROLLBACK" => xid_text(rest).map(XaStatement::Rollback),
        _ => None,
    }
}

/// `X'7831',X'',1` (what follows is left: ` ONE PHASE`).
fn xid_text(s: &str) -> Option<Xid> {
    let hex = |s: &str| -> Option<(Vec<u8>, usize)> {
        let body = s.strip_prefix("X'").or_else(|| s.strip_prefix("x'"))?;
        let end = body.find('\'')?;
        let digits = &body[..end];
        if digits.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some((bytes, 2 + end + 1))
    };
    let s = s.trim_start();
    let (gtrid, n) = hex(s)?;
    let s = s[n..].strip_prefix(',')?;
    let (bqual, n) = hex(s)?;
    let s = s[n..].strip_prefix(',')?;
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    Some(Xid {
        format: digits.parse().ok()?,
        gtrid,
        bqual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xid(g: &[u8], b: &[u8], format: u32) -> Xid {
        Xid {
            format,
            gtrid: g.to_vec(),
            bqual: b.to_vec(),
        }
    }

    #[test]
    fn gtid_events_as_mariadb_10_11_writes_them() {
        // Bodies from `mariadb-binlog --hexdump` (checksum cut): a transaction, an XA
        // PREPARE's group (with extra flags after the id), an XA COMMIT's, a group commit.
        let plain = b"\xe1\x36\x01\0\0\0\0\0\0\0\0\0\x0c\0\0\0\0\0\0";
        let g = Gtid::read(plain).unwrap();
        assert_eq!((g.domain, g.seq_no, g.xid.clone()), (0, 79585, None));
        assert!(!g.standalone() && !g.prepared_xa());
        let prepare = b"\xe2\x36\x01\0\0\0\0\0\0\0\0\0\x4c\x07\0\0\0\x02\x02x4bq\x01\xff";
        let g = Gtid::read(prepare).unwrap();
        assert!(g.prepared_xa() && !g.standalone());
        assert_eq!(g.xid, Some(xid(b"x4", b"bq", 7)));
        let commit = b"\xde\x36\x01\0\0\0\0\0\0\0\0\0\x8d\x01\0\0\0\x02\0x1";
        let g = Gtid::read(commit).unwrap();
        assert!(g.standalone() && !g.prepared_xa());
        assert_eq!(g.xid, Some(xid(b"x1", b"", 1)));
        let mut grouped = b"\x05\0\0\0\0\0\0\0\x02\0\0\0\x0e".to_vec();
        grouped.extend(42u64.to_le_bytes());
        let g = Gtid::read(&grouped).unwrap();
        assert_eq!((g.domain, g.seq_no, g.flags), (2, 5, 0x0e));
        // Cut short: `None`, never a panic.
        for n in 0..commit.len() {
            assert_eq!(Gtid::read(&commit[..n]), None, "{n}");
        }
        assert_eq!(Gtid::read(&grouped[..20]), None);
    }

    #[test]
    fn xa_prepare_events_and_statements() {
        let ev = b"\0\x07\0\0\0\x02\0\0\0\x02\0\0\0x4bq";
        assert_eq!(xa_prepare(ev), Some((xid(b"x4", b"bq", 7), false)));
        assert_eq!(xa_prepare(&ev[..16]), None);
        assert_eq!(xa_prepare(b"\x01\x01\0\0\0\xff\xff\xff\xff\0\0\0\0"), None);
        assert_eq!(
            xa_statement("XA COMMIT X'7834',X'6271',7"),
            Some(XaStatement::Commit(xid(b"x4", b"bq", 7)))
        );
        assert_eq!(
            xa_statement("xa rollback X'7832',X'',1"),
            Some(XaStatement::Rollback(xid(b"x2", b"", 1)))
        );
        assert_eq!(
            xa_statement("XA COMMIT X'',X'',0 ONE PHASE"),
            Some(XaStatement::Commit(xid(b"", b"", 0)))
        );
        assert_eq!(
            xa_statement("XA START X'7831',X'',1"),
            Some(XaStatement::Start)
        );
        assert_eq!(xa_statement("XA END X'7831',X'',1"), Some(XaStatement::End));
        assert_eq!(xa_statement("XA COMMIT 'x1'"), None);
        assert_eq!(xa_statement("XA COMMIT X'7',X'',1"), None);
        assert_eq!(xa_statement("XACT"), None);
        assert_eq!(xa_statement("INSERT INTO xa VALUES (1)"), None);
        assert_eq!(xid(b"x1", b"", 1).to_string(), "X'7831',X'',1");
    }
}
