//! Binlog events by type, for the ones the stream does not apply: their names (MariaDB's
//! own types included), the table a rows event is of (its post-header says, even when the
//! rest cannot be read), and the events skipped, counted by type
//! (`sluice_binlog_events_skipped_total{type}`) and logged once per type.
//!
//! MariaDB's compressed events (`log_bin_compress`) are read as the plain ones by the
//! vendored mysql_common (`vendor/README.md`): they reach the stream as query and rows events.

use mysql_async::binlog::events::FormatDescriptionEvent;
use mysql_async::binlog::EventType;

use super::BinlogPos;

/// MariaDB's event types (`sql/log_event.h`), which mysql_common does not name.
const MARIADB: [(u8, &str); 12] = [
    (160, "ANNOTATE_ROWS_EVENT"),
    (161, "BINLOG_CHECKPOINT_EVENT"),
    (162, "GTID_EVENT (MariaDB)"),
    (163, "GTID_LIST_EVENT"),
    (164, "START_ENCRYPTION_EVENT"),
    (165, "QUERY_COMPRESSED_EVENT"),
    (166, "WRITE_ROWS_COMPRESSED_EVENT_V1"),
    (167, "UPDATE_ROWS_COMPRESSED_EVENT_V1"),
    (168, "DELETE_ROWS_COMPRESSED_EVENT_V1"),
    (169, "WRITE_ROWS_COMPRESSED_EVENT"),
    (170, "UPDATE_ROWS_COMPRESSED_EVENT"),
    (171, "DELETE_ROWS_COMPRESSED_EVENT"),
];

/// An event type's name (`WRITE_ROWS_EVENT_V1`), or its number when it has none.
pub(super) fn type_name(raw: u8) -> String {
    if let Some((_, name)) = MARIADB.iter().find(|(n, _)| *n == raw) {
        return (*name).to_string();
    }
    match EventType::try_from(raw) {
        Ok(t) => format!("{t:?}"),
        Err(_) => format!("type {raw}"),
    }
}

/// The table id of a rows event (any kind: MySQL's pre-GA, v1, v2 and partial update ones,
/// MariaDB's compressed ones), from the start of its post-header; `None` for other events.
pub(super) fn rows_table_id(raw: u8, data: &[u8], fde: &FormatDescriptionEvent<'_>) -> Option<u64> {
    if !matches!(raw, 20..=25 | 30..=32 | 39 | 166..=171) {
        return None;
    }
    // Servers before 5.1.4 wrote a 4-byte table id (a post-header of 6 bytes).
    let post_header = fde
        .event_type_header_lengths()
        .get(usize::from(raw) - 1)
        .copied();
    let width = if post_header == Some(6) { 4 } else { 6 };
    let id = data.get(..width)?;
    Some(id.iter().rev().fold(0, |n, &b| (n << 8) | u64::from(b)))
}

/// An event of type `raw` at `at` was skipped: it is counted, and the first of each type is
/// logged.
pub(super) fn skipped(raw: u8, at: &BinlogPos) {
    let name = type_name(raw);
    if crate::telemetry::binlog_event_skipped(&name) {
        tracing::info!(event = %name, at = %at, "a binlog event binlog capture does not apply was skipped; later ones of this type are only counted (sluice_binlog_events_skipped_total)");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::{write::ZlibEncoder, Compression};
    use mysql_async::binlog::events::mariadb_compressed::uncompress_record;
    use mysql_async::binlog::events::{Event, EventData, RowsEventData};
    use mysql_async::binlog::BinlogVersion;

    use super::*;

    /// A compressed record as MariaDB's `binlog_buf_compress` writes it.
    fn record(plain: &[u8]) -> Vec<u8> {
        let len = u32::try_from(plain.len()).unwrap().to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count().min(3);
        let mut out = vec![0x80 | (4 - skip) as u8];
        out.extend(&len[skip..]);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(plain).unwrap();
        out.extend(z.finish().unwrap());
        out
    }

    /// An event of type `raw` with `body` after the common header (no checksum).
    fn event(raw: u8, body: &[u8]) -> Event {
        let mut bytes = vec![0u8; 19];
        bytes[4] = raw;
        bytes[9..13].copy_from_slice(&(19 + body.len() as u32).to_le_bytes());
        bytes[13..17].copy_from_slice(&1000u32.to_le_bytes());
        bytes.extend(body);
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        Event::read(&fde, &bytes[..]).unwrap()
    }

    #[test]
    fn compressed_records_uncompress_and_bad_ones_are_errors() {
        for len in [0usize, 1, 255, 256, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(uncompress_record(&record(&plain)).unwrap(), plain, "{len}");
        }
        let good = record(b"some text to compress");
        for (bad, why) in [
            (vec![], "no record"),
            (vec![0x01, 0x05], "is not 0x8n"),
            (vec![0x90, 0x05], "compression algorithm 1"),
            (vec![0x85, 0, 0, 0, 0, 0], "5 length bytes"),
            (vec![0x80], "0 length bytes"),
            (vec![0x82, 0x01], "2 length bytes"),
            (vec![0x81, 5, 1, 2, 3], "zlib"),
            ([&[0x81, 99][..], &good[2..]].concat(), "the record says 99"),
            ([&[0x81, 3][..], &good[2..]].concat(), "the record says 3"),
        ] {
            let e = uncompress_record(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn compressed_events_read_as_the_plain_ones() {
        // QUERY_COMPRESSED_EVENT: thread id, time, database name length, error code, status
        // variables length; two bytes of status variables; the database name and its NUL;
        // the query, compressed.
        let sql = "TRUNCATE TABLE t /* long enough to be worth compressing */";
        let mut body = vec![0u8; 13];
        body[8] = 2;
        body[11] = 2;
        body.extend([0x00, 0x01]); // flags2 (Q_FLAGS2_CODE) cut short: any 2 bytes do
        body.extend(b"db\0");
        body.extend(record(sql.as_bytes()));
        let ev = event(165, &body);
        match ev.read_data().unwrap() {
            Some(EventData::QueryEvent(q)) => {
                assert_eq!(q.query(), sql);
                assert_eq!(q.schema(), "db");
            }
            other => panic!("{other:?}"),
        }
        // UPDATE_ROWS_COMPRESSED_EVENT_V1 and the v2 delete: table id, flags, (v2: extra
        // data), column count, bitmaps (two for an update), the rows, compressed.
        let rows = b"\x00\x2a\x00\x00\x00\x00\x2b\x00\x00\x00";
        let mut v1 = vec![7, 0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0xff];
        v1.extend(record(rows));
        let mut v2 = vec![7, 0, 0, 0, 0, 0, 1, 0, 2, 0, 1, 0xff];
        v2.extend(record(rows));
        for (raw, body) in [(167u8, v1), (171, v2)] {
            let ev = event(raw, &body);
            let plain = ev.mariadb_uncompressed().unwrap().unwrap();
            assert_eq!(
                plain.header().event_size() as usize,
                19 + plain.data().len()
            );
            match ev.read_data().unwrap() {
                Some(EventData::RowsEvent(r)) => {
                    assert!(matches!(
                        (raw, &r),
                        (167, RowsEventData::UpdateRowsEventV1(_))
                            | (171, RowsEventData::DeleteRowsEvent(_))
                    ));
                    assert_eq!(r.table_id(), 7);
                    assert_eq!(r.rows_data(), rows);
                }
                other => panic!("{raw}: {other:?}"),
            }
            assert_eq!(rows_table_id(raw, ev.data(), ev.fde()), Some(7));
        }
        // A bad record: an error naming it, not a panic.
        let mut bad = vec![7, 0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0x81, 10, 1, 2, 3];
        let e = event(166, &bad).read_data().unwrap_err().to_string();
        assert!(e.contains("MariaDB compressed event: zlib"), "{e}");
        // Cut before its rows: an error too.
        bad.truncate(10);
        assert!(event(166, &bad).read_data().is_err());
        assert!(event(165, &[0u8; 5]).read_data().is_err());
        // Other events are left alone.
        assert!(event(2, &[0u8; 16])
            .mariadb_uncompressed()
            .unwrap()
            .is_none());
    }

    #[test]
    fn types_are_named() {
        assert_eq!(type_name(23), "WRITE_ROWS_EVENT_V1");
        assert_eq!(type_name(166), "WRITE_ROWS_COMPRESSED_EVENT_V1");
        assert_eq!(type_name(200), "type 200");
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        assert_eq!(rows_table_id(2, &[1; 8], &fde), None);
        assert_eq!(
            rows_table_id(30, &[1, 2, 0, 0, 0, 0, 0], &fde),
            Some(0x0201)
        );
        assert_eq!(rows_table_id(30, &[1, 2], &fde), None);
    }
}
