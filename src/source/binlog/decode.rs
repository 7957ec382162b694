//! Row images from the binlog, turned into the same [`Value`]s polling reads, column by
//! column as the model's [`Kind`] says. What the binlog stores differently from a SELECT is
//! undone here:
//!
//! - ENUM is stored as its index and SET as a bit mask: turned back into labels (from the
//!   column's type);
//! - BINARY(n) loses its trailing zero bytes: padded back to n bytes;
//! - TIMESTAMP is seconds since the epoch; TIME keeps days apart from hours;
//! - YEAR 0000 comes as 1900 (the decoder adds 1900 to the stored byte): back to 0;
//! - BIT(n) is big-endian bytes: turned into n characters `0`/`1`;
//! - MySQL's JSON is a binary document: turned into its text;
//! - a negative MEDIUMINT comes without its sign (the decoder does not extend 24 bits).
//!
//! Zero dates follow `[source] zero_dates` as in polling: NULL, or the row fails.

use chrono::{DateTime, NaiveDate, Utc};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value as My;

use super::charset::Codec;
use crate::model::{parse_labels, Column, Kind};
use crate::value::Value;

/// Whether a column of `kind` is what a table map describes: its type, metadata (DECIMAL
/// digits, fractional seconds, BIT width), sign and character set (63: binary). Tells, after
/// a schema change, which columns kept their type.
pub fn fits(
    kind: Kind,
    ty: mysql_async::consts::ColumnType,
    meta: &[u8],
    unsigned: bool,
    charset: u16,
) -> bool {
    use mysql_async::consts::ColumnType as T;
    let fsp = |want: u8, v2: T, v1: T| {
        (ty == v2 && meta.first().copied().unwrap_or(0) == want) || (ty == v1 && want == 0)
    };
    let binary = charset == 63;
    let stringy = matches!(
        ty,
        T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
    );
    match kind {
        Kind::Bool => ty == T::MYSQL_TYPE_TINY && !unsigned,
        Kind::Int { bytes } | Kind::UInt { bytes } => {
            let want = match bytes {
                1 => T::MYSQL_TYPE_TINY,
                2 => T::MYSQL_TYPE_SHORT,
                3 => T::MYSQL_TYPE_INT24,
                4 => T::MYSQL_TYPE_LONG,
                _ => T::MYSQL_TYPE_LONGLONG,
            };
            ty == want && unsigned == matches!(kind, Kind::UInt { .. })
        }
        Kind::Decimal { precision, scale } => {
            ty == T::MYSQL_TYPE_NEWDECIMAL
                && meta.first().map(|&p| u32::from(p)) == Some(precision)
                && meta.get(1).map(|&s| u32::from(s)) == Some(scale)
        }
        Kind::Float32 => ty == T::MYSQL_TYPE_FLOAT,
        Kind::Float64 => ty == T::MYSQL_TYPE_DOUBLE,
        Kind::Text => stringy && !binary,
        Kind::Json => ty == T::MYSQL_TYPE_JSON || (stringy && !binary),
        Kind::Bytes => stringy && binary,
        Kind::Enum => ty == T::MYSQL_TYPE_ENUM,
        Kind::Set => ty == T::MYSQL_TYPE_SET,
        Kind::Date => matches!(ty, T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE),
        Kind::DateTime { fsp: f } => fsp(f, T::MYSQL_TYPE_DATETIME2, T::MYSQL_TYPE_DATETIME),
        Kind::Timestamp { fsp: f } => fsp(f, T::MYSQL_TYPE_TIMESTAMP2, T::MYSQL_TYPE_TIMESTAMP),
        Kind::Time { fsp: f } => fsp(f, T::MYSQL_TYPE_TIME2, T::MYSQL_TYPE_TIME),
        Kind::Year => ty == T::MYSQL_TYPE_YEAR,
        Kind::Bits(n) => {
            ty == T::MYSQL_TYPE_BIT
                && match meta {
                    [bits, bytes, ..] => u32::from(*bytes) * 8 + u32::from(*bits) == n,
                    _ => false,
                }
        }
    }
}

/// What a row image's table map says of one column: the character set of its text, and its
/// ENUM or SET labels at that place in the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageColumn {
    pub codec: Codec,
    pub labels: Option<Vec<String>>,
}

/// How one column's binlog values become [`Value`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDecoder {
    pub kind: Kind,
    /// ENUM and SET labels, in definition order.
    labels: Vec<String>,
    /// BINARY(n): n.
    binary_len: Option<usize>,
    /// A zero date becomes NULL (else the row fails).
    zero_to_null: bool,
}

impl ColumnDecoder {
    /// From a model column (its source type says labels and lengths).
    pub fn new(c: &Column, zero_to_null: bool) -> Self {
        let t = c.source_type.trim();
        let lower = t.to_ascii_lowercase();
        let labels = if matches!(c.kind, Kind::Enum | Kind::Set) {
            parse_labels(t)
        } else {
            Vec::new()
        };
        let binary_len = lower
            .strip_prefix("binary(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.trim().parse().ok());
        ColumnDecoder {
            kind: c.kind,
            labels,
            binary_len,
            zero_to_null,
        }
    }

    /// Decodes one value of a UTF-8 column, ENUM and SET with the labels of the column's type;
    /// see [`ColumnDecoder::decode_with`].
    pub fn decode(&self, v: Option<&BinlogValue<'_>>) -> Result<Value, String> {
        self.decode_with(v.cloned(), &ImageColumn::default())
    }

    /// Decodes one value as the row image's table map says (`how`): text in its character
    /// set, ENUM and SET with its labels (those of the column's type when the map has none);
    /// the error is the reason, for a message that names the table, key and column. Takes the
    /// value, so text and bytes the event's reader allocated become the row's without a copy.
    pub fn decode_with(
        &self,
        v: Option<BinlogValue<'_>>,
        how: &ImageColumn,
    ) -> Result<Value, String> {
        let codec = &how.codec;
        let labels = how.labels.as_deref().unwrap_or(&self.labels);
        let v = match v {
            None | Some(BinlogValue::Value(My::NULL)) => return Ok(Value::Null),
            Some(BinlogValue::Value(v)) => v,
            Some(BinlogValue::Jsonb(j)) => {
                let json = serde_json::Value::try_from(j)
                    .map_err(|e| format!("its JSON document cannot be read: {e}"))?;
                return Ok(Value::Text(json.to_string()));
            }
            Some(BinlogValue::JsonDiff(_)) => {
                return Err("it is a partial JSON update (binlog_row_value_options = PARTIAL_JSON); binlog capture needs full row images: SET GLOBAL binlog_row_value_options = ''".into())
            }
        };
        // Text and bytes: the reader's allocation becomes the value's.
        let v = match (self.kind, v) {
            (Kind::Text | Kind::Json, My::Bytes(b)) => {
                return Ok(Value::Text(codec.decode_owned(b)?))
            }
            (Kind::Decimal { .. }, My::Bytes(b)) => return Ok(Value::Text(text(b)?)),
            (Kind::Bytes, My::Bytes(mut b)) => {
                if let Some(n) = self.binary_len {
                    if b.len() < n {
                        b.resize(n, 0);
                    }
                }
                return Ok(Value::Bytes(b));
            }
            (_, v) => v,
        };
        let v = &v;
        let unexpected = || {
            format!(
                "the binlog holds {v:?}, which is not a {:?} value",
                self.kind
            )
        };
        Ok(match (self.kind, v) {
            (Kind::Bool, My::Int(i @ (0 | 1))) => Value::Bool(*i == 1),
            (Kind::Bool, My::Int(i)) => return Err(format!(
                "TINYINT(1) holds {i}, which is neither 0 nor 1, so it is not a boolean; set `tinyint1_as_boolean = false` in the table's [[tables]] entry to replicate TINYINT(1) as smallint; sluice changes an existing target column to smallint at the next start"
            )),
            // mysql_common reads a signed MEDIUMINT without extending its sign bit.
            (Kind::Int { bytes: 3 }, My::Int(i)) if *i >= 1 << 23 => Value::Int(*i - (1 << 24)),
            (Kind::Int { .. }, My::Int(i)) => Value::Int(*i),
            (Kind::UInt { .. }, My::UInt(u)) => Value::UInt(*u),
            (Kind::UInt { bytes }, My::Int(i)) => {
                // Without signedness metadata the value comes signed: reinterpret its bits.
                let bits = u32::from(bytes) * 8;
                let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
                Value::UInt((*i as u64) & mask)
            }
            (Kind::Float32, My::Float(f)) => Value::Float(f64::from(*f)),
            (Kind::Float64, My::Double(d)) => Value::Float(*d),
            (Kind::Float64, My::Float(f)) => Value::Float(f64::from(*f)),
            (Kind::Enum, My::Int(i)) => Value::Text(match *i {
                0 => String::new(),
                i => labels
                    .get(i as usize - 1)
                    .cloned()
                    .ok_or_else(|| format!("ENUM index {i} is past its {} labels", labels.len()))?,
            }),
            (Kind::Set, My::Bytes(mask)) => {
                let mut on = Vec::new();
                for (i, label) in labels.iter().enumerate() {
                    if mask.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                        on.push(label.as_str());
                    }
                }
                Value::Text(on.join(","))
            }
            (Kind::Date, My::Date(y, m, d, ..)) => match NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*m), u32::from(*d)) {
                Some(date) => Value::Date(date),
                None => return self.zero_date(),
            },
            (Kind::DateTime { .. }, My::Date(y, mo, d, h, mi, s, us)) => {
                match NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d))
                    .and_then(|date| date.and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us))
                {
                    Some(t) => Value::DateTime(t),
                    None => return self.zero_date(),
                }
            }
            (Kind::Timestamp { .. }, My::Bytes(b)) => {
                let s = text_ref(b)?;
                let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
                let secs: i64 = secs.parse().map_err(|_| unexpected())?;
                if secs == 0 && frac.trim_matches('0').is_empty() {
                    return self.zero_date();
                }
                let micros: u32 = format!("{frac:0<6}")[..6].parse().map_err(|_| unexpected())?;
                DateTime::<Utc>::from_timestamp(secs, micros * 1000)
                    .map(Value::Timestamp)
                    .ok_or_else(unexpected)?
            }
            (Kind::Time { fsp }, My::Time(neg, days, h, m, s, us)) => {
                Value::Text(time_text(*neg, days * 24 + u32::from(*h), *m, *s, *us, fsp))
            }
            (Kind::Year, My::Bytes(b)) => match text_ref(b)?.parse::<i64>() {
                // The decoder reads YEAR as 1900 + the stored byte; 0 stands for 0000.
                Ok(1900) => Value::Int(0),
                Ok(y) => Value::Int(y),
                Err(_) => return Err(unexpected()),
            },
            (Kind::Year, My::Int(y)) => Value::Int(*y),
            (Kind::Bits(n), My::Bytes(b)) => {
                let mut bits = String::with_capacity(b.len() * 8);
                for byte in b {
                    bits.push_str(&format!("{byte:08b}"));
                }
                let n = n as usize;
                let s = if bits.len() >= n {
                    bits[bits.len() - n..].to_string()
                } else {
                    format!("{bits:0>n$}")
                };
                Value::Text(s)
            }
            _ => return Err(unexpected()),
        })
    }

    fn zero_date(&self) -> Result<Value, String> {
        if self.zero_to_null {
            Ok(Value::Null)
        } else {
            Err("it holds a zero date (year, month or day 0), which PostgreSQL cannot store; set `zero_dates = \"null\"` in [source] to replicate such dates as NULL, or fix the row on the source".into())
        }
    }
}

fn text(b: Vec<u8>) -> Result<String, String> {
    String::from_utf8(b).map_err(|_| "it is not valid UTF-8 text".to_string())
}

fn text_ref(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "it is not valid UTF-8 text".to_string())
}

/// `[-]H:MM:SS[.f…]` with `fsp` fractional digits, as `CAST(time AS CHAR)` prints it.
fn time_text(neg: bool, hours: u32, m: u8, s: u8, us: u32, fsp: u8) -> String {
    let sign = if neg { "-" } else { "" };
    let mut out = format!("{sign}{hours:02}:{m:02}:{s:02}");
    if fsp > 0 {
        let frac = format!("{us:06}");
        out.push('.');
        out.push_str(&frac[..usize::from(fsp.min(6))]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: Kind, source_type: &str) -> ColumnDecoder {
        ColumnDecoder::new(&Column::new("c", source_type, kind), true)
    }

    fn v(x: My) -> BinlogValue<'static> {
        BinlogValue::Value(x)
    }

    #[test]
    fn what_the_binlog_stores_differently_is_undone() {
        let e = col(Kind::Enum, "enum('x','y''s','z')");
        assert_eq!(
            e.decode(Some(&v(My::Int(2)))),
            Ok(Value::Text("y's".into()))
        );
        assert_eq!(
            e.decode(Some(&v(My::Int(0)))),
            Ok(Value::Text(String::new()))
        );
        let s = col(Kind::Set, "set('a','b','c')");
        assert_eq!(
            s.decode(Some(&v(My::Bytes(vec![5])))),
            Ok(Value::Text("a,c".into()))
        );
        let b = col(Kind::Bytes, "binary(4)");
        assert_eq!(
            b.decode(Some(&v(My::Bytes(b"x".to_vec())))),
            Ok(Value::Bytes(b"x\0\0\0".to_vec()))
        );
        let y = col(Kind::Year, "year(4)");
        assert_eq!(
            y.decode(Some(&v(My::Bytes(b"1900".to_vec())))),
            Ok(Value::Int(0))
        );
        assert_eq!(
            y.decode(Some(&v(My::Bytes(b"2155".to_vec())))),
            Ok(Value::Int(2155))
        );
        let bits = col(Kind::Bits(10), "bit(10)");
        assert_eq!(
            bits.decode(Some(&v(My::Bytes(vec![0b10, 0b1010_1010])))),
            Ok(Value::Text("1010101010".into()))
        );
        let t = col(Kind::Time { fsp: 2 }, "time(2)");
        assert_eq!(
            t.decode(Some(&v(My::Time(true, 34, 22, 59, 59, 990_000)))),
            Ok(Value::Text("-838:59:59.99".into()))
        );
        let t0 = col(Kind::Time { fsp: 0 }, "time");
        assert_eq!(
            t0.decode(Some(&v(My::Time(false, 0, 1, 2, 3, 0)))),
            Ok(Value::Text("01:02:03".into()))
        );
        let ts = col(Kind::Timestamp { fsp: 3 }, "timestamp(3)");
        assert_eq!(
            ts.decode(Some(&v(My::Bytes(b"1767323045.125".to_vec())))),
            Ok(Value::Timestamp(
                DateTime::<Utc>::from_timestamp(1_767_323_045, 125_000_000).unwrap()
            ))
        );
        assert_eq!(
            ts.decode(Some(&v(My::Bytes(b"0".to_vec())))),
            Ok(Value::Null)
        );
        let mi = col(Kind::Int { bytes: 3 }, "mediumint(9)");
        assert_eq!(
            mi.decode(Some(&v(My::Int(8_388_608)))),
            Ok(Value::Int(-8_388_608))
        );
        assert_eq!(mi.decode(Some(&v(My::Int(16_777_215)))), Ok(Value::Int(-1)));
        assert_eq!(
            mi.decode(Some(&v(My::Int(8_388_607)))),
            Ok(Value::Int(8_388_607))
        );
        let u = col(Kind::UInt { bytes: 4 }, "int(10) unsigned");
        assert_eq!(
            u.decode(Some(&v(My::Int(-1)))),
            Ok(Value::UInt(4_294_967_295))
        );
        let bool_c = col(Kind::Bool, "tinyint(1)");
        assert!(bool_c
            .decode(Some(&v(My::Int(2))))
            .unwrap_err()
            .contains("neither 0 nor 1"));
        let d = col(Kind::Date, "date");
        assert_eq!(
            d.decode(Some(&v(My::Date(0, 0, 0, 0, 0, 0, 0)))),
            Ok(Value::Null)
        );
    }
}

#[cfg(test)]
mod decimal_tests {
    use mysql_common::binlog::decimal::{decimal_bin_size, read_bin_text, Decimal, DIG_TO_BYTES};
    use rand::{Rng, SeedableRng};

    /// A DECIMAL(precision, scale) in the binlog's binary form, from random digit groups.
    fn encode(rng: &mut impl Rng, precision: usize, scale: usize) -> Vec<u8> {
        let widths = {
            let intg = precision - scale;
            let mut w = Vec::new();
            if !intg.is_multiple_of(9) {
                w.push(intg % 9);
            }
            w.extend(std::iter::repeat_n(9, intg / 9 + scale / 9));
            if !scale.is_multiple_of(9) {
                w.push(scale % 9);
            }
            w
        };
        let mut out = Vec::new();
        for w in widths {
            // Often zero, to cover leading zero groups and zero values.
            let x: u32 = if rng.gen_bool(0.3) {
                0
            } else {
                rng.gen_range(0..10u32.pow(w as u32))
            };
            let n = DIG_TO_BYTES[w] as usize;
            out.extend_from_slice(&x.to_be_bytes()[4 - n..]);
        }
        if rng.gen_bool(0.5) {
            out.iter_mut().for_each(|b| *b ^= 0xff);
        }
        if let Some(b) = out.first_mut() {
            *b ^= 0x80;
        }
        assert_eq!(out.len(), decimal_bin_size(precision, scale));
        out
    }

    #[test]
    fn decimal_text_from_the_binary_form_is_what_the_decimal_type_prints() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for precision in 1..=65 {
            for scale in (0..=precision.min(30)).step_by(1) {
                for _ in 0..40 {
                    let bin = encode(&mut rng, precision, scale);
                    let want = Decimal::read_bin(&bin[..], precision, scale, false)
                        .unwrap()
                        .to_string();
                    let got = read_bin_text(&bin[..], precision, scale).unwrap();
                    assert_eq!(
                        String::from_utf8(got).unwrap(),
                        want,
                        "DECIMAL({precision},{scale}) {bin:02x?}"
                    );
                }
            }
        }
        // A short input is an error, as it was.
        assert!(read_bin_text(&[0x80_u8][..], 10, 2).is_err());
        // A digit group past its width (a corrupt value) is an error, never printed cut:
        // DECIMAL(2,0) is one byte, at most 99.
        assert_eq!(read_bin_text(&[0x80_u8 | 99][..], 2, 0).unwrap(), b"99");
        assert!(read_bin_text(&[0x80_u8 | 100][..], 2, 0).is_err());
        // A scale larger than the precision (corrupt metadata) is an error, not a panic.
        assert!(read_bin_text(&[0x80_u8; 8][..], 2, 5).is_err());
    }
}
