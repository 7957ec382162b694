//! The capture mode as the rest of sluice asks it, and stored positions read back.
//!
//! Outside `source/`, nothing decodes a position or asks which capture mode is on: the
//! supervisor, `status`, the background verify and start-up ask a [`Mode`] (how many lanes,
//! whether the target follows source transactions, what the server must allow, where the
//! source's head is) and a [`SourcePosition`] (what to show, whether a load is under way,
//! whether the position covers a head, how far behind it is). How a mode writes its
//! positions stays in [`super::poll::keyset`] and [`super::binlog`].

use sea_orm::sqlx::MySqlConnection;

use super::binlog::{self, BinlogPos};
use super::mysql;
use super::poll::keyset;
use crate::config::{Capture, Settings};
use crate::error::Result;
use crate::model::Position;
use crate::value::Value;

/// The configured capture mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(Capture);

impl Mode {
    pub fn of(settings: &Settings) -> Mode {
        Mode(settings.source.capture)
    }

    /// Binlog capture: one stream, whole source transactions, deletes seen.
    pub fn is_binlog(self) -> bool {
        self.0 == Capture::Binlog
    }

    /// How many lanes (reader + writer pairs) serve `tables` tables. Binlog capture reads
    /// one stream for all its tables: one lane.
    pub fn lanes(self, settings: &Settings, tables: usize) -> usize {
        match self.0 {
            Capture::Binlog => 1,
            Capture::Poll => settings
                .pipeline
                .lanes(tables, settings.verify.interval_s > 0),
        }
        .min(tables)
    }

    /// Whether the target is written in source-transaction order, so that constraints
    /// between rows (unique secondary indexes, foreign keys) hold at every commit.
    pub fn transaction_ordered(self) -> bool {
        self.is_binlog()
    }

    /// What the server must allow for this mode, refused at start with how to fix it:
    /// binlog capture's settings and privileges; polling's DATETIME zone.
    pub async fn check_server(self, conn: &mut MySqlConnection, settings: &Settings) -> Result<()> {
        match self.0 {
            Capture::Binlog => binlog::checks::check_server(conn).await.map(|_| ()),
            Capture::Poll => mysql::resolve_zone(conn, settings.source.datetime_zone.as_deref())
                .await
                .map(|_| ()),
        }
    }

    /// Where the source is now, for positions to be compared with ([`SourcePosition::covers`],
    /// [`SourcePosition::bytes_behind`]); `None` for polling, whose positions are keys.
    pub async fn head(self, conn: &mut MySqlConnection) -> Result<Option<Head>> {
        if !self.is_binlog() {
            return Ok(None);
        }
        let flavor = mysql::Flavor::detect(conn).await?;
        let at = binlog::current_position(conn, flavor).await?;
        let logs = binlog::binary_logs(conn).await?;
        Ok(Some(Head { at, logs }))
    }

    /// The binlog files the server holds (sizes only), enough for
    /// [`SourcePosition::bytes_behind`]; cheaper than [`Mode::head`].
    pub async fn files(self, conn: &mut MySqlConnection) -> Result<Option<Head>> {
        if !self.is_binlog() {
            return Ok(None);
        }
        let logs = binlog::binary_logs(conn).await?;
        let at = logs
            .last()
            .map(|(file, size)| BinlogPos::at(file.clone(), *size))
            .unwrap_or(BinlogPos::at("", 0));
        Ok(Some(Head { at, logs }))
    }
}

/// Where a binlog-capturing source is: its current position and its files.
#[derive(Debug, Clone)]
pub struct Head {
    at: BinlogPos,
    logs: Vec<(String, u64)>,
}

/// A stored position read back, whichever mode wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum SourcePosition {
    /// Polling: the keyset's columns and values, and whether it was stored during a
    /// key-ordered initial load.
    Poll {
        keyset: Vec<(String, Value)>,
        loading: bool,
    },
    Binlog(binlog::Stored),
}

impl SourcePosition {
    /// `None` for a position neither mode wrote.
    pub fn read(p: &Position) -> Option<SourcePosition> {
        if let Ok(s) = serde_json::from_value::<binlog::Stored>(p.0.clone()) {
            return Some(SourcePosition::Binlog(s));
        }
        keyset::describe(p).map(|keyset| SourcePosition::Poll {
            keyset,
            loading: keyset::Keyset::decode_load(p).is_some(),
        })
    }

    /// The same, from the JSON the state table holds.
    pub fn from_json(v: &serde_json::Value) -> Option<SourcePosition> {
        Self::read(&Position(v.clone()))
    }

    /// A polling position's keyset, in keyset order; empty for binlog positions.
    pub fn keyset(&self) -> &[(String, Value)] {
        match self {
            SourcePosition::Poll { keyset, .. } => keyset,
            SourcePosition::Binlog(_) => &[],
        }
    }

    /// The table's initial load (polling, key-ordered) or snapshot (binlog) is under way.
    pub fn loading(&self) -> bool {
        match self {
            SourcePosition::Poll { loading, .. } => *loading,
            SourcePosition::Binlog(s) => s.snapshot.is_some(),
        }
    }

    /// Every source change up to `head` is covered (binlog); polling positions never
    /// compare with a head.
    pub fn covers(&self, head: &Head) -> bool {
        match self {
            SourcePosition::Binlog(s) => s.binlog >= head.at,
            SourcePosition::Poll { .. } => false,
        }
    }

    /// Bytes of binary log between the position and the end of `head`'s files.
    pub fn bytes_behind(&self, head: &Head) -> Option<u64> {
        match self {
            SourcePosition::Binlog(s) => Some(binlog::bytes_behind(&s.binlog, &head.logs)),
            SourcePosition::Poll { .. } => None,
        }
    }

    /// For `status`: `(created=…, id=…)`, or `binlog mysql-bin.000012:4567` and the
    /// snapshot's progress.
    pub fn describe(&self) -> String {
        match self {
            SourcePosition::Poll { keyset, .. } => format!(
                "({})",
                keyset
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Text(s) => format!("{k}={s}"),
                        v => format!("{k}={}", v.display()),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            SourcePosition::Binlog(s) => binlog::describe(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_positions_round_trip_and_describe_themselves() {
        let s = binlog::Stored {
            binlog: binlog::BinlogPos::at("mysql-bin.000003", 4567),
            snapshot: Some(binlog::SnapshotProgress {
                after: Some(vec![Value::Int(7)]),
                ..Default::default()
            }),
        };
        let p = s.position();
        assert_eq!(
            SourcePosition::read(&p).unwrap().describe(),
            "snapshot after key (7) (then binlog from mysql-bin.000003:4567)"
        );
        // A copy beside the stream says where its changes are applied up to; its counts
        // round-trip, and a position written before sluice counted reads them as 0.
        let mut beside = s.clone();
        if let Some(p) = &mut beside.snapshot {
            p.beside = true;
            p.copied(Some(vec![Value::Int(9)]), 3);
        }
        let read = SourcePosition::read(&beside.position()).unwrap();
        assert_eq!(
            read.describe(),
            "copy beside the stream after key (9) (its changes applied up to binlog mysql-bin.000003:4567)"
        );
        let SourcePosition::Binlog(b) = read else {
            panic!("a binlog position")
        };
        let progress = b.snapshot.unwrap();
        assert_eq!((progress.rows, progress.chunks), (3, 1));
        assert!(progress.started_at.is_some());
        let mut old = p.0.clone();
        old["snapshot"] = serde_json::json!({ "after": old["snapshot"]["after"].clone() });
        let old: binlog::Stored = serde_json::from_value(old).unwrap();
        assert_eq!(old.snapshot.map(|p| (p.rows, p.chunks)), Some((0, 0)));
        let done = binlog::Stored {
            snapshot: None,
            ..s
        };
        assert_eq!(
            SourcePosition::read(&done.position()).unwrap().describe(),
            "binlog mysql-bin.000003:4567"
        );
        assert!(done.position().0.get("snapshot").is_none());
    }
}
