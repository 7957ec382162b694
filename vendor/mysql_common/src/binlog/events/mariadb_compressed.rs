// sluice: MariaDB's compressed query and rows events (`log_bin_compress = ON`), read as the
// plain events they stand for. Not part of mysql_common 0.37.3; see vendor/README.md.
//
// The format, as MariaDB's `sql/log_event.cc` writes and reads it (`binlog_buf_compress`,
// `binlog_buf_uncompress`, `binlog_get_uncompress_len`, `query_event_uncompress`,
// `row_log_event_uncompress`):
//
// * a compressed record is one header byte (bit 7 set, bits 4-6 the algorithm: 0 = zlib, the
//   only one; bits 0-2 the number of length bytes, 1 to 4), the uncompressed length in that
//   many bytes, most significant first, then the zlib stream;
// * QUERY_COMPRESSED_EVENT (165) is a QUERY_EVENT whose query text (after the post-header,
//   the status variables and the database name with its NUL) is such a record;
// * {WRITE,UPDATE,DELETE}_ROWS_COMPRESSED_EVENT_V1 (166-168) and _COMPRESSED_EVENT (169-171)
//   are the v1 (23-25) and v2 (30-32) rows events whose rows (after the post-header, the
//   column count and the column bitmaps, two for an update) are such a record.
//
// The post-header lengths the format description gives the compressed types are the plain
// types' (QUERY_HEADER_LEN, ROWS_HEADER_LEN_V1, ROWS_HEADER_LEN_V2), so the plain event
// parses as it would have been written uncompressed.

use std::io::{self, Read};

use flate2::read::ZlibDecoder;

use super::{BinlogEventHeader, Event};
use crate::{
    binlog::consts::{BinlogChecksumAlg, EventType},
    misc::raw::{RawConst, RawInt},
};

/// MariaDB's QUERY_COMPRESSED_EVENT.
pub const QUERY_COMPRESSED_EVENT: u8 = 165;
/// MariaDB's WRITE_ROWS_COMPRESSED_EVENT_V1; the update and delete ones follow it.
pub const WRITE_ROWS_COMPRESSED_EVENT_V1: u8 = 166;
/// MariaDB's WRITE_ROWS_COMPRESSED_EVENT; the update and delete ones follow it.
pub const WRITE_ROWS_COMPRESSED_EVENT: u8 = 169;
/// MariaDB's last compressed event type (DELETE_ROWS_COMPRESSED_EVENT).
pub const DELETE_ROWS_COMPRESSED_EVENT: u8 = 171;

/// The plain event type a MariaDB compressed one stands for, if `raw` is one.
pub fn plain_type(raw: u8) -> Option<EventType> {
    use EventType::*;
    Some(match raw {
        QUERY_COMPRESSED_EVENT => QUERY_EVENT,
        166 => WRITE_ROWS_EVENT_V1,
        167 => UPDATE_ROWS_EVENT_V1,
        168 => DELETE_ROWS_EVENT_V1,
        169 => WRITE_ROWS_EVENT,
        170 => UPDATE_ROWS_EVENT,
        171 => DELETE_ROWS_EVENT,
        _ => return None,
    })
}

fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("MariaDB compressed event: {what}"),
    )
}

/// Uncompresses one compressed record (see the module's comment).
pub fn uncompress_record(record: &[u8]) -> io::Result<Vec<u8>> {
    let (&head, rest) = record.split_first().ok_or_else(|| bad("no record"))?;
    if head & 0x80 == 0 {
        return Err(bad(format_args!("record header {head:#04x} is not 0x8n")));
    }
    if head & 0x70 != 0 {
        return Err(bad(format_args!(
            "record header {head:#04x}: compression algorithm {} (only 0, zlib, exists)",
            (head & 0x70) >> 4
        )));
    }
    let len_bytes = usize::from(head & 0x07);
    if !(1..=4).contains(&len_bytes) || rest.len() < len_bytes {
        return Err(bad(format_args!(
            "record header {head:#04x}: {len_bytes} length bytes"
        )));
    }
    let (len, zlib) = rest.split_at(len_bytes);
    let len = len.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
    // Never more than the record says, whatever the stream holds.
    let mut out = Vec::with_capacity(len.min(1 << 24));
    ZlibDecoder::new(zlib)
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format_args!("zlib: {e}")))?;
    if out.len() != len {
        return Err(bad(format_args!(
            "{} bytes uncompressed, the record says {len}",
            out.len()
        )));
    }
    Ok(out)
}

/// A length-encoded integer at `data[*at..]` (the rows event's column count), moving `at`.
fn lenenc(data: &[u8], at: &mut usize) -> io::Result<u64> {
    let first = *data.get(*at).ok_or_else(|| bad("truncated column count"))?;
    let width = match first {
        0..=250 => {
            *at += 1;
            return Ok(u64::from(first));
        }
        252 => 2,
        253 => 3,
        254 => 8,
        _ => return Err(bad(format_args!("column count prefix {first}"))),
    };
    let bytes = data
        .get(*at + 1..*at + 1 + width)
        .ok_or_else(|| bad("truncated column count"))?;
    *at += 1 + width;
    Ok(bytes
        .iter()
        .rev()
        .fold(0u64, |n, &b| (n << 8) | u64::from(b)))
}

impl Event {
    /// This event as the plain event it stands for, if it is a MariaDB compressed one
    /// (`None` otherwise).
    pub fn mariadb_uncompressed(&self) -> io::Result<Option<Event>> {
        let raw = self.header.event_type_raw();
        let Some(plain) = plain_type(raw) else {
            return Ok(None);
        };
        let data = &self.data;
        let post_header = self
            .fde
            .event_type_header_lengths()
            .get(usize::from(raw) - 1)
            .copied();
        let start = if plain == EventType::QUERY_EVENT {
            // Post-header: thread id (4), time (4), database name length (1), error code (2),
            // status variables length (2).
            let post_header = usize::from(post_header.unwrap_or(13));
            if data.len() < 13 {
                return Err(bad("truncated query post-header"));
            }
            let db_len = usize::from(data[8]);
            let status_len = usize::from(u16::from_le_bytes([data[11], data[12]]));
            post_header + status_len + db_len + 1
        } else {
            // Post-header: table id (6), flags (2), and in v2 the extra data, its length (2)
            // first and counted in it.
            let mut at = 8;
            let v2 = raw >= WRITE_ROWS_COMPRESSED_EVENT;
            if post_header.map_or(v2, |l| l == 10) {
                let extra = data
                    .get(at..at + 2)
                    .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                    .ok_or_else(|| bad("truncated rows post-header"))?;
                if extra < 2 {
                    return Err(bad(format_args!("extra data length {extra}")));
                }
                at += extra;
            }
            let columns = lenenc(data, &mut at)?;
            let bitmaps = if plain == EventType::UPDATE_ROWS_EVENT
                || plain == EventType::UPDATE_ROWS_EVENT_V1
            {
                2
            } else {
                1
            };
            at + bitmaps * usize::try_from(columns.div_ceil(8)).map_err(bad)?
        };
        if start >= data.len() {
            return Err(bad(format_args!(
                "{} bytes, the compressed part starts at {start}",
                data.len()
            )));
        }
        let mut plain_data = data[..start].to_vec();
        plain_data.extend(uncompress_record(&data[start..])?);
        // The checksum's bytes (if any) were cut from `data`: the plain event keeps as many.
        let checksum_len =
            (self.header.event_size() as usize).saturating_sub(BinlogEventHeader::LEN + data.len());
        let size = BinlogEventHeader::LEN + plain_data.len() + checksum_len;
        let mut header = self.header;
        header.event_type = RawConst::new(plain as u8);
        header.event_size = RawInt::new(u32::try_from(size).map_err(bad)?);
        let mut event = Event {
            fde: self.fde.clone(),
            header,
            data: plain_data,
            footer: self.footer,
            checksum: self.checksum,
        };
        if let Ok(Some(alg @ BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) =
            self.footer.get_checksum_alg()
        {
            event.checksum = event.calc_checksum(alg).to_le_bytes();
        }
        Ok(Some(event))
    }
}
