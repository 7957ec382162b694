//! Row values between the two databases: decoded once from MySQL, encoded once into
//! PostgreSQL's COPY text format, and (for keyset columns) stored as JSON in the watermark
//! and bound back into the next MySQL query.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// One column value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Text, and values MySQL hands out as text: DECIMAL digits, ENUM, SET, TIME.
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    /// A MySQL TIMESTAMP, read with the session time zone at UTC.
    Timestamp(DateTime<Utc>),
}

/// A source row: one value per column, in the table's column order.
pub type Row = Vec<Value>;

impl Value {
    /// Appends the value in PostgreSQL's COPY text format (no delimiter, no newline).
    pub fn write_copy_text(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            Value::Null => out.extend_from_slice(b"\\N"),
            Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::UInt(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(v) => {
                if v.is_nan() {
                    out.extend_from_slice(b"NaN");
                } else if v.is_infinite() {
                    out.extend_from_slice(if *v > 0.0 { b"Infinity" } else { b"-Infinity" });
                } else {
                    // `{}` prints the shortest text that parses back to the same f64.
                    let _ = write!(out, "{v}");
                }
            }
            Value::Text(s) => escape_copy_text(s.as_bytes(), out),
            Value::Bytes(b) => {
                // bytea hex input `\x0a1b…`; the backslash itself is escaped for COPY.
                out.extend_from_slice(b"\\\\x");
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for byte in b {
                    out.push(HEX[(byte >> 4) as usize]);
                    out.push(HEX[(byte & 0xf) as usize]);
                }
            }
            Value::Date(d) => write_date(*d, out),
            Value::DateTime(t) => write_datetime(t, out),
            Value::Timestamp(t) => {
                write_datetime(&t.naive_utc(), out);
                out.extend_from_slice(b"+00");
            }
        }
    }

    /// Short human form, for logs and error messages (keys of bad rows).
    pub fn display(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Text(s) => format!("{s:?}"),
            Value::Bytes(b) => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
            Value::Date(d) => d.to_string(),
            Value::DateTime(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S%.6fZ").to_string(),
        }
    }

    /// The value as a UTC instant, when it is a point in time (for lag measurement).
    pub fn as_utc(&self) -> Option<DateTime<Utc>> {
        match self {
            Value::DateTime(t) => Some(t.and_utc()),
            Value::Timestamp(t) => Some(*t),
            _ => None,
        }
    }
}

/// `YYYY-MM-DD` (years 0-9999, as MySQL has them), without chrono's format-string parser:
/// this runs once per time value on the hot path.
fn write_date(d: NaiveDate, out: &mut Vec<u8>) {
    use chrono::Datelike;
    let y = d.year();
    if !(0..=9999).contains(&y) {
        use std::io::Write;
        let _ = write!(out, "{}", d.format("%Y-%m-%d"));
        return;
    }
    push_digits(out, y as u32, 4);
    out.push(b'-');
    push_digits(out, d.month(), 2);
    out.push(b'-');
    push_digits(out, d.day(), 2);
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`.
fn write_datetime(t: &NaiveDateTime, out: &mut Vec<u8>) {
    use chrono::Timelike;
    write_date(t.date(), out);
    out.push(b' ');
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, t.second(), 2);
    out.push(b'.');
    push_digits(out, (t.nanosecond() % 1_000_000_000) / 1_000, 6);
}

fn push_digits(out: &mut Vec<u8>, mut v: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (0..width).rev() {
        out[start + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// COPY text escaping: backslash, and the characters that would end a field or a row.
fn escape_copy_text(bytes: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Encodes rows as COPY text: tab between fields, newline after each row.
pub fn encode_copy_rows<'a>(rows: impl IntoIterator<Item = &'a Row>, out: &mut Vec<u8>) {
    for row in rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            v.write_copy_text(out);
        }
        out.push(b'\n');
    }
}

/// A target column type whose COPY binary form sluice writes. A table goes through COPY
/// binary when every one of its target columns has one of these types; PostgreSQL then
/// skips parsing text (timestamps above all), which halves its COPY time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `text`, `character varying`, `json`: the UTF-8 bytes.
    Text,
    /// `jsonb`: a version byte, then the text.
    Jsonb,
    Bytea,
    Date,
    Timestamp,
    Timestamptz,
}

impl BinType {
    /// The binary form for a column of this PostgreSQL type (as `format_type` spells it),
    /// or `None` when the table must go through COPY text.
    pub fn of(format_type: &str) -> Option<BinType> {
        let base = format_type.split('(').next().unwrap_or("").trim();
        let zone = format_type.rsplit(')').next().unwrap_or("").trim();
        Some(match base {
            "boolean" => BinType::Bool,
            "smallint" => BinType::Int2,
            "integer" => BinType::Int4,
            "bigint" => BinType::Int8,
            "real" => BinType::Float4,
            "double precision" => BinType::Float8,
            "text" | "character varying" | "json" => BinType::Text,
            "jsonb" => BinType::Jsonb,
            "bytea" => BinType::Bytea,
            "date" => BinType::Date,
            "timestamp without time zone" => BinType::Timestamp,
            "timestamp with time zone" => BinType::Timestamptz,
            "timestamp" if zone == "without time zone" => BinType::Timestamp,
            "timestamp" if zone == "with time zone" => BinType::Timestamptz,
            _ => return None,
        })
    }
}

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds and in days from the Common Era.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_CE_DAYS: i32 = 730_120;

/// Appends one value's binary field (length, then bytes; -1 for NULL). Returns false when
/// the value has no binary form for the column's type (out of range, say): the caller
/// then sends the batch as text, and PostgreSQL says what it refuses.
fn write_binary_field(v: &Value, t: BinType, out: &mut Vec<u8>) -> bool {
    use chrono::Datelike;
    fn fixed(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
        true
    }
    let int = |v: &Value| -> Option<i64> {
        match *v {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    };
    match (t, v) {
        (_, Value::Null) => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            true
        }
        (BinType::Bool, Value::Bool(b)) => fixed(out, &[*b as u8]),
        (BinType::Int2, v) => match int(v).and_then(|i| i16::try_from(i).ok()) {
            Some(i) => fixed(out, &i.to_be_bytes()),
            None => false,
        },
        (BinType::Int4, v) => match int(v).and_then(|i| i32::try_from(i).ok()) {
            Some(i) => fixed(out, &i.to_be_bytes()),
            None => false,
        },
        (BinType::Int8, v) => match int(v) {
            Some(i) => fixed(out, &i.to_be_bytes()),
            None => false,
        },
        // FLOAT columns arrive as the f64 of an f32: narrowing is exact.
        (BinType::Float4, Value::Float(f)) => fixed(out, &(*f as f32).to_be_bytes()),
        (BinType::Float8, Value::Float(f)) => fixed(out, &f.to_be_bytes()),
        (BinType::Text, Value::Text(s)) => fixed(out, s.as_bytes()),
        (BinType::Jsonb, Value::Text(s)) => {
            out.extend_from_slice(&(s.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(s.as_bytes());
            true
        }
        (BinType::Bytea, Value::Bytes(b)) => match i32::try_from(b.len()) {
            Ok(_) => fixed(out, b),
            Err(_) => false,
        },
        (BinType::Date, Value::Date(d)) => fixed(
            out,
            &(d.num_days_from_ce() - PG_EPOCH_CE_DAYS).to_be_bytes(),
        ),
        (BinType::Timestamp, Value::DateTime(t)) => fixed(
            out,
            &(t.and_utc().timestamp_micros() - PG_EPOCH_UNIX_MICROS).to_be_bytes(),
        ),
        (BinType::Timestamptz, Value::Timestamp(t)) => fixed(
            out,
            &(t.timestamp_micros() - PG_EPOCH_UNIX_MICROS).to_be_bytes(),
        ),
        _ => false,
    }
}

/// Encodes rows as COPY binary (header, tuples, trailer) for columns of `types`. Returns
/// false, with `out` holding garbage, when a value has no binary form for its column; the
/// caller then clears `out` and encodes the batch as text.
pub fn encode_copy_binary<'a>(
    rows: impl IntoIterator<Item = &'a Row>,
    types: &[BinType],
    out: &mut Vec<u8>,
) -> bool {
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    let n = types.len() as i16;
    for row in rows {
        if row.len() != types.len() {
            return false;
        }
        out.extend_from_slice(&n.to_be_bytes());
        for (v, &t) in row.iter().zip(types) {
            if !write_binary_field(v, t, out) {
                return false;
            }
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(v: Value) -> String {
        let mut out = Vec::new();
        v.write_copy_text(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn copy_text_escapes_what_would_break_a_row() {
        assert_eq!(
            copy(Value::Text("a\tb\nc\\d\re".into())),
            "a\\tb\\nc\\\\d\\re"
        );
        assert_eq!(copy(Value::Text("plain 😀 'q'".into())), "plain 😀 'q'");
        assert_eq!(copy(Value::Null), "\\N");
        assert_eq!(copy(Value::Bytes(vec![0, 0xff, 0x10])), "\\\\x00ff10");
    }

    #[test]
    fn copy_text_keeps_microseconds_and_full_range() {
        let t = NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_micro_opt(13, 1, 2, 5)
            .unwrap();
        assert_eq!(copy(Value::DateTime(t)), "2026-11-25 13:01:02.000005");
        assert_eq!(copy(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(copy(Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(copy(Value::Float(0.1)), "0.1");
        assert_eq!(copy(Value::Float(f64::NEG_INFINITY)), "-Infinity");
    }

    #[test]
    fn watermark_json_round_trips_types() {
        let t = NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 6)
            .unwrap();
        let vals = vec![
            Value::DateTime(t),
            Value::Text("k".into()),
            Value::UInt(u64::MAX),
            Value::Int(-3),
        ];
        let json = serde_json::to_value(&vals).unwrap();
        let back: Vec<Value> = serde_json::from_value(json).unwrap();
        assert_eq!(back, vals);
    }

    #[test]
    fn binary_types_follow_format_type() {
        assert_eq!(
            BinType::of("timestamp(6) without time zone"),
            Some(BinType::Timestamp)
        );
        assert_eq!(
            BinType::of("timestamp(3) with time zone"),
            Some(BinType::Timestamptz)
        );
        assert_eq!(
            BinType::of("timestamp without time zone"),
            Some(BinType::Timestamp)
        );
        assert_eq!(BinType::of("character varying(36)"), Some(BinType::Text));
        assert_eq!(BinType::of("jsonb"), Some(BinType::Jsonb));
        assert_eq!(BinType::of("numeric(20,0)"), None);
        assert_eq!(BinType::of("interval"), None);
        assert_eq!(BinType::of("bit(1)"), None);
        assert_eq!(BinType::of("character(10)"), None);
    }

    #[test]
    fn binary_fields_use_postgres_epochs_and_refuse_what_does_not_fit() {
        let enc = |v: Value, t: BinType| {
            let mut out = Vec::new();
            write_binary_field(&v, t, &mut out).then_some(out)
        };
        let d = NaiveDate::from_ymd_opt(2000, 1, 2).unwrap();
        assert_eq!(
            enc(Value::Date(d), BinType::Date),
            Some(vec![0, 0, 0, 4, 0, 0, 0, 1])
        );
        let t = d.and_hms_micro_opt(0, 0, 0, 5).unwrap();
        let mut want = vec![0, 0, 0, 8];
        want.extend_from_slice(&(86_400_000_005i64).to_be_bytes());
        assert_eq!(enc(Value::DateTime(t), BinType::Timestamp), Some(want));
        assert_eq!(enc(Value::Null, BinType::Int4), Some(vec![0xff; 4]));
        assert_eq!(enc(Value::Int(70_000), BinType::Int2), None);
        assert_eq!(enc(Value::UInt(u64::MAX), BinType::Int8), None);
        assert_eq!(enc(Value::Text("x".into()), BinType::Int8), None);
        assert_eq!(
            enc(Value::Text("{}".into()), BinType::Jsonb),
            Some(vec![0, 0, 0, 3, 1, b'{', b'}'])
        );
    }
}
