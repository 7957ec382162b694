//! Where binlog capture stands: a file and an offset on one server, the GTID state there (what
//! the same place is on every server of the replication topology), and which server's file it
//! is.
//!
//! File and offset are exact but belong to one server; after a failover the promoted replica's
//! files have other names and offsets. The GTID state names the same place on every server
//! that replicates the same transactions: MariaDB's is, per replication domain, the last
//! transaction (`0-1-100,1-2-7`: domain-server-sequence); MySQL's is the set of transactions
//! executed (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100`). Positions an older sluice wrote
//! have no GTID state; the stream gives them one at their next commit.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A place in the binary log: a file and a byte offset in it, the GTID state there, and the
/// server whose binlog the file is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
    /// The GTID state at this place: every transaction it names is before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<GtidState>,
    /// The `server_id` of the server whose binlog `file` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
    /// MySQL's `server_uuid` of that server (MariaDB has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uuid: Option<String>,
}

impl BinlogPos {
    /// Offset `pos` of `file`, on a server not said.
    pub fn at(file: impl Into<String>, pos: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            pos,
            gtid: None,
            server_id: None,
            server_uuid: None,
        }
    }

    /// The file's sequence number (`mysql-bin.000012` → 12).
    fn seq(&self) -> Option<u64> {
        self.file.rsplit('.').next().and_then(|n| n.parse().ok())
    }

    /// Whether the file and offset of both are on one server's binlog (a position that does
    /// not say its server, written by an older sluice, is taken for the same).
    pub fn same_server(&self, other: &BinlogPos) -> bool {
        match (self.server_id, other.server_id) {
            (Some(a), Some(b)) if a != b => false,
            _ => match (&self.server_uuid, &other.server_uuid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        }
    }

    /// The server, for messages: `server_id 1`.
    pub fn server(&self) -> String {
        match (self.server_id, &self.server_uuid) {
            (Some(id), Some(uuid)) => format!("server_id {id} ({uuid})"),
            (Some(id), None) => format!("server_id {id}"),
            _ => "an unrecorded server".into(),
        }
    }
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        match &self.gtid {
            Some(g) if !g.is_empty() => write!(f, " (GTID {g})"),
            _ => Ok(()),
        }
    }
}

/// Two positions are equal when their file and offset are: within one server's binlog that is
/// one place (the GTID state there follows from it).
impl PartialEq for BinlogPos {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for BinlogPos {}

impl PartialOrd for BinlogPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By file number, then offset: meaningful within one server's binlog (see
/// [`BinlogPos::same_server`]).
impl Ord for BinlogPos {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.seq(), other.seq()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.file.cmp(&other.file),
        }
        .then(self.pos.cmp(&other.pos))
    }
}

/// The GTID of one transaction (an event group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupGtid {
    /// MariaDB's `domain-server-sequence`.
    MariaDb { domain: u32, server: u32, seq: u64 },
    /// MySQL's `uuid:number` (the uuid with its tag, if any, as MySQL writes it).
    MySql { sid: String, gno: u64 },
}

impl fmt::Display for GroupGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupGtid::MariaDb {
                domain,
                server,
                seq,
            } => write!(f, "{domain}-{server}-{seq}"),
            GroupGtid::MySql { sid, gno } => write!(f, "{sid}:{gno}"),
        }
    }
}

/// A GTID state: which transactions lie before a place in the binlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidState {
    /// MariaDB: per replication domain, the server id and sequence number of its last
    /// transaction.
    MariaDb(BTreeMap<u32, (u32, u64)>),
    /// MySQL: per source (uuid, with its tag), the transaction numbers executed, as inclusive
    /// ranges in order.
    MySql(BTreeMap<String, Vec<(u64, u64)>>),
}

impl Default for GtidState {
    fn default() -> Self {
        GtidState::MariaDb(BTreeMap::new())
    }
}

impl GtidState {
    pub fn is_empty(&self) -> bool {
        match self {
            GtidState::MariaDb(m) => m.is_empty(),
            GtidState::MySql(m) => m.is_empty(),
        }
    }

    /// Reads either format: MariaDB's `0-1-100,1-2-7` or MySQL's
    /// `uuid:1-100:200-210,uuid2:5`; the empty string is the empty state. `None` when it is
    /// neither.
    pub fn parse(s: &str) -> Option<GtidState> {
        let s = s.trim();
        if s.is_empty() {
            return Some(GtidState::default());
        }
        if s.contains(':') {
            let mut sets = BTreeMap::new();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let mut fields = part.split(':');
                let mut sid = fields.next()?.to_ascii_lowercase();
                if sid.len() != 36 || !sid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
                    return None;
                }
                let mut ranges: Vec<(u64, u64)> = Vec::new();
                for f in fields {
                    // MySQL 8.3's tagged GTIDs: `uuid:tag:1-5`.
                    if f.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                        sid = format!("{sid}:{}", f.to_ascii_lowercase());
                        continue;
                    }
                    let (a, b) = match f.split_once('-') {
                        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                        None => {
                            let n = f.parse().ok()?;
                            (n, n)
                        }
                    };
                    if a == 0 || b < a {
                        return None;
                    }
                    ranges.push((a, b));
                }
                let entry: &mut Vec<(u64, u64)> = sets.entry(sid).or_default();
                entry.extend(ranges);
                normalize(entry);
            }
            return Some(GtidState::MySql(sets));
        }
        let mut domains = BTreeMap::new();
        for (d, server, seq) in parse_mariadb_list(s)? {
            domains.insert(d, (server, seq));
        }
        Some(GtidState::MariaDb(domains))
    }

    /// Whether the transaction `g` lies before this state's place.
    pub fn contains(&self, g: &GroupGtid) -> bool {
        match (self, g) {
            (GtidState::MariaDb(m), GroupGtid::MariaDb { domain, seq, .. }) => {
                m.get(domain).is_some_and(|&(_, last)| last >= *seq)
            }
            (GtidState::MySql(m), GroupGtid::MySql { sid, gno }) => m
                .get(sid)
                .is_some_and(|r| r.iter().any(|&(a, b)| a <= *gno && *gno <= b)),
            _ => false,
        }
    }

    /// The state after transaction `g`.
    pub fn add(&mut self, g: &GroupGtid) {
        if self.is_empty() && matches!(g, GroupGtid::MySql { .. }) {
            *self = GtidState::MySql(BTreeMap::new());
        }
        match (self, g) {
            (
                GtidState::MariaDb(m),
                GroupGtid::MariaDb {
                    domain,
                    server,
                    seq,
                },
            ) => {
                m.insert(*domain, (*server, *seq));
            }
            (GtidState::MySql(m), GroupGtid::MySql { sid, gno }) => {
                let r = m.entry(sid.clone()).or_default();
                r.push((*gno, *gno));
                normalize(r);
            }
            _ => {}
        }
    }

    /// The place no later than either, for a stream that must serve both: MariaDB's lower
    /// sequence per domain (a domain only one of them has is left out: the stream then starts
    /// that domain from its beginning), MySQL's intersection.
    pub fn meet(&self, other: &GtidState) -> GtidState {
        match (self, other) {
            (GtidState::MariaDb(a), GtidState::MariaDb(b)) => GtidState::MariaDb(
                a.iter()
                    .filter_map(|(d, &x)| {
                        let &y = b.get(d)?;
                        Some((*d, if x.1 <= y.1 { x } else { y }))
                    })
                    .collect(),
            ),
            (GtidState::MySql(a), GtidState::MySql(b)) => GtidState::MySql(
                a.iter()
                    .filter_map(|(sid, ra)| {
                        let rb = b.get(sid)?;
                        let mut both = Vec::new();
                        for &(a1, a2) in ra {
                            for &(b1, b2) in rb {
                                let (lo, hi) = (a1.max(b1), a2.min(b2));
                                if lo <= hi {
                                    both.push((lo, hi));
                                }
                            }
                        }
                        normalize(&mut both);
                        (!both.is_empty()).then(|| (sid.clone(), both))
                    })
                    .collect(),
            ),
            _ => GtidState::default(),
        }
    }

    /// The transactions of this state a server's binlog does not hold. `server`: MariaDB's
    /// `@@gtid_binlog_state` (the last GTID of every domain and server it logged), or MySQL's
    /// `@@gtid_executed`. A server of the same replication topology that has read at least as
    /// far holds every one; another server's history does not (MariaDB: that server never
    /// logged a transaction of the same domain and server id that far).
    pub fn missing_on(&self, server: &str) -> Vec<GroupGtid> {
        match self {
            GtidState::MariaDb(m) => {
                let theirs = parse_mariadb_list(server).unwrap_or_default();
                m.iter()
                    .filter(|(d, (s, n))| {
                        !theirs
                            .iter()
                            .any(|(td, ts, tn)| td == *d && ts == s && tn >= n)
                    })
                    .map(|(d, &(s, n))| GroupGtid::MariaDb {
                        domain: *d,
                        server: s,
                        seq: n,
                    })
                    .collect()
            }
            GtidState::MySql(m) => {
                let theirs = GtidState::parse(server).unwrap_or_default();
                let mut missing = Vec::new();
                for (sid, ranges) in m {
                    for &(a, b) in ranges {
                        for gno in [a, b] {
                            let g = GroupGtid::MySql {
                                sid: sid.clone(),
                                gno,
                            };
                            if !theirs.contains(&g) {
                                missing.push(g);
                            }
                        }
                    }
                }
                missing
            }
        }
    }
}

/// MariaDB's GTID list (`0-1-100,0-2-7`), in order; `None` when malformed.
fn parse_mariadb_list(s: &str) -> Option<Vec<(u32, u32, u64)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut f = p.split('-');
            let (d, s, n) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() {
                return None;
            }
            Some((d.parse().ok()?, s.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

/// Sorts ranges and merges those that touch or overlap.
fn normalize(r: &mut Vec<(u64, u64)>) {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for &(a, b) in r.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *r = out;
}

impl fmt::Display for GtidState {
    /// As the server writes it (`0-1-100,1-2-7`; `uuid:1-100:200-210`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = match self {
            GtidState::MariaDb(m) => m.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect(),
            GtidState::MySql(m) => m
                .iter()
                .map(|(sid, ranges)| {
                    let mut s = sid.clone();
                    for &(a, b) in ranges {
                        if a == b {
                            s.push_str(&format!(":{a}"));
                        } else {
                            s.push_str(&format!(":{a}-{b}"));
                        }
                    }
                    s
                })
                .collect(),
        };
        f.write_str(&parts.join(","))
    }
}

impl Serialize for GtidState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GtidState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GtidState::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a GTID state: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maria(domain: u32, server: u32, seq: u64) -> GroupGtid {
        GroupGtid::MariaDb {
            domain,
            server,
            seq,
        }
    }

    #[test]
    fn positions_order_by_file_number_then_offset() {
        let p = |f: &str, pos| BinlogPos::at(f, pos);
        assert!(p("mysql-bin.000009", 900) < p("mysql-bin.000010", 4));
        assert!(p("mysql-bin.000010", 4) < p("mysql-bin.000010", 5));
        assert!(p("mysql-bin.999999", 4) < p("mysql-bin.1000000", 4));
        let mut with_gtid = p("mysql-bin.000010", 4);
        with_gtid.gtid = GtidState::parse("0-1-5");
        assert_eq!(with_gtid, p("mysql-bin.000010", 4));
        assert_eq!(with_gtid.to_string(), "mysql-bin.000010:4 (GTID 0-1-5)");
    }

    #[test]
    fn positions_say_their_server() {
        let mut a = BinlogPos::at("b.1", 4);
        let mut b = BinlogPos::at("b.1", 4);
        assert!(a.same_server(&b), "unrecorded: the same");
        a.server_id = Some(1);
        assert!(a.same_server(&b));
        b.server_id = Some(2);
        assert!(!a.same_server(&b));
        b.server_id = Some(1);
        a.server_uuid = Some("u1".into());
        b.server_uuid = Some("u2".into());
        assert!(!a.same_server(&b));
        assert_eq!(a.server(), "server_id 1 (u1)");
    }

    #[test]
    fn old_positions_still_read_and_new_ones_carry_gtids() {
        let old: BinlogPos =
            serde_json::from_str(r#"{"file":"mysql-bin.000003","pos":4567}"#).unwrap();
        assert_eq!((old.gtid.clone(), old.server_id), (None, None));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"file":"mysql-bin.000003","pos":4567}"#
        );
        let new = BinlogPos {
            gtid: GtidState::parse("0-1-100,2-3-7"),
            server_id: Some(1),
            ..old
        };
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(
            json,
            r#"{"file":"mysql-bin.000003","pos":4567,"gtid":"0-1-100,2-3-7","server_id":1}"#
        );
        let back: BinlogPos = serde_json::from_str(&json).unwrap();
        assert_eq!(back.gtid, new.gtid);
        assert!(serde_json::from_str::<BinlogPos>(r#"{"file":"f","pos":4,"gtid":"x"}"#).is_err());
    }

    #[test]
    fn mariadb_states_follow_transactions_per_domain() {
        let mut s = GtidState::parse("0-1-100").unwrap();
        assert!(s.contains(&maria(0, 1, 100)) && s.contains(&maria(0, 2, 7)));
        assert!(!s.contains(&maria(0, 1, 101)));
        assert!(!s.contains(&maria(1, 1, 1)), "another domain: not before");
        s.add(&maria(1, 2, 5));
        s.add(&maria(0, 2, 101));
        assert_eq!(s.to_string(), "0-2-101,1-2-5");
        let other = GtidState::parse("0-1-90,1-2-9,3-1-1").unwrap();
        assert_eq!(s.meet(&other).to_string(), "0-1-90,1-2-5");
        assert_eq!(GtidState::parse("").unwrap(), GtidState::default());
        assert_eq!(GtidState::parse("0-1"), None);
        assert_eq!(GtidState::parse("0-1-2-3"), None);
        assert_eq!(GtidState::parse("a-1-2"), None);
    }

    #[test]
    fn a_server_of_another_history_misses_the_state() {
        let ours = GtidState::parse("0-1-100").unwrap();
        // The promoted replica logged the primary's transactions (server 1) and its own.
        assert!(ours.missing_on("0-1-120,0-2-130").is_empty());
        assert!(ours.missing_on("0-2-130,0-1-100").is_empty());
        // Behind us, or a server that never logged server 1's transactions in domain 0.
        assert_eq!(ours.missing_on("0-1-99"), vec![maria(0, 1, 100)]);
        assert_eq!(ours.missing_on("0-2-5000"), vec![maria(0, 1, 100)]);
        assert_eq!(ours.missing_on(""), vec![maria(0, 1, 100)]);
        assert!(GtidState::default().missing_on("").is_empty());
    }

    #[test]
    fn mysql_gtid_sets_parse_follow_and_print() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let v = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s = GtidState::parse(&format!("{u}:1-5:7, {}:3", v.to_uppercase())).unwrap();
        assert_eq!(s.to_string(), format!("{u}:1-5:7,{v}:3"));
        let g = |sid: &str, gno| GroupGtid::MySql {
            sid: sid.into(),
            gno,
        };
        assert!(s.contains(&g(u, 5)) && s.contains(&g(u, 7)) && !s.contains(&g(u, 6)));
        s.add(&g(u, 6));
        assert_eq!(s.to_string(), format!("{u}:1-7,{v}:3"));
        let other = GtidState::parse(&format!("{u}:3-10")).unwrap();
        assert_eq!(s.meet(&other).to_string(), format!("{u}:3-7"));
        assert!(s.missing_on(&format!("{u}:1-100,{v}:1-3")).is_empty());
        assert_eq!(s.missing_on(&format!("{u}:1-100")), vec![g(v, 3), g(v, 3)]);
        let tagged = GtidState::parse(&format!("{u}:Tag_1:1-3")).unwrap();
        assert_eq!(tagged.to_string(), format!("{u}:tag_1:1-3"));
        assert_eq!(GtidState::parse(&format!("{u}:0")), None);
        assert_eq!(GtidState::parse("nope:1-3"), None);
        let mut fresh = GtidState::default();
        fresh.add(&g(u, 1));
        assert_eq!(fresh.to_string(), format!("{u}:1"));
    }
}
