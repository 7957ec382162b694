//! COPY: rows encoded in PostgreSQL's text or binary COPY format, and sent in chunks so a
//! batch of wide rows is never encoded whole in memory.
//!
//! Binary is used when every target column has a type listed in [`BinType`] and every value
//! of the batch fits its column ([`binary_fits`]); PostgreSQL then parses nothing, which
//! halves its share of a COPY. Anything else goes as text.

use chrono::{NaiveDate, NaiveDateTime};
use sea_orm::sqlx::{self, PgConnection};

use crate::value::{Row, Value};

/// Encoded bytes sent per CopyData round: large enough that the per-message cost vanishes,
/// small enough to keep memory flat whatever the batch.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Appends the value in PostgreSQL's COPY text format (no delimiter, no newline).
pub fn write_text(v: &Value, out: &mut Vec<u8>) {
    use std::io::Write;
    match v {
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
        Value::Text(s) => escape_text(s.as_bytes(), out),
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

/// The value as the text of a bound parameter cast to its column's type (`$1::numeric`):
/// COPY text without COPY's escaping. `None` for NULL.
pub fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        Value::Bytes(b) => {
            let mut out = String::with_capacity(2 + b.len() * 2);
            out.push_str("\\x");
            for byte in b {
                out.push_str(&format!("{byte:02x}"));
            }
            Some(out)
        }
        other => {
            let mut out = Vec::new();
            write_text(other, &mut out);
            Some(String::from_utf8_lossy(&out).into_owned())
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
fn escape_text(bytes: &[u8], out: &mut Vec<u8>) {
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

/// One row as COPY text: tab between fields, a newline after. `cols` picks the columns (all
/// of them when `None`).
pub fn write_text_row(row: &Row, cols: Option<&[usize]>, out: &mut Vec<u8>) {
    let mut first = true;
    let mut field = |v: &Value| {
        if !first {
            out.push(b'\t');
        }
        first = false;
        write_text(v, out);
    };
    match cols {
        Some(cols) => cols.iter().for_each(|&i| field(&row[i])),
        None => row.iter().for_each(&mut field),
    }
    out.push(b'\n');
}

/// Encodes rows as COPY text: tab between fields, newline after each row.
pub fn encode_text<'a>(rows: impl IntoIterator<Item = &'a Row>, out: &mut Vec<u8>) {
    for row in rows {
        write_text_row(row, None, out);
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
    /// `numeric`: DECIMAL digits (and integers), in base-10000 digit groups.
    Numeric,
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
            "numeric" => BinType::Numeric,
            _ => return None,
        })
    }
}

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds and in days from the Common Era.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_CE_DAYS: i32 = 730_120;

fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::Int(i) => Some(i),
        Value::UInt(u) => i64::try_from(u).ok(),
        _ => None,
    }
}

/// Whether a value has a binary form for a column of type `t` (in range, right variant).
fn fits(v: &Value, t: BinType) -> bool {
    match (t, v) {
        (_, Value::Null) => true,
        (BinType::Bool, Value::Bool(_)) => true,
        (BinType::Int2, v) => as_i64(v).is_some_and(|i| i16::try_from(i).is_ok()),
        (BinType::Int4, v) => as_i64(v).is_some_and(|i| i32::try_from(i).is_ok()),
        (BinType::Int8, v) => as_i64(v).is_some(),
        (BinType::Float4 | BinType::Float8, Value::Float(_)) => true,
        (BinType::Text | BinType::Jsonb, Value::Text(s)) => s.len() < i32::MAX as usize,
        (BinType::Bytea, Value::Bytes(b)) => b.len() <= i32::MAX as usize,
        (BinType::Date, Value::Date(_)) => true,
        (BinType::Timestamp, Value::DateTime(_)) => true,
        (BinType::Timestamptz, Value::Timestamp(_)) => true,
        (BinType::Numeric, Value::Int(_) | Value::UInt(_)) => true,
        (BinType::Numeric, Value::Text(s)) => decimal_parts(s).is_some(),
        _ => false,
    }
}

/// `[-]digits[.digits]` split into (negative, integer digits, fraction digits); `None` for
/// anything else (an exponent, `NaN`, stray characters), which goes through COPY text.
fn decimal_parts(s: &str) -> Option<(bool, &str, &str)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match body.bytes().position(|b| b == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) || frac.len() > 16383 {
        return None;
    }
    Some((neg, int, frac))
}

/// PostgreSQL's binary `numeric`: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then the base-10000 digits without leading or trailing zero groups.
/// The digits are gathered on the stack (a DECIMAL has at most 65 digits: 18 groups).
fn write_numeric(neg: bool, int: &str, frac: &str, out: &mut Vec<u8>) {
    let group = |s: &[u8]| s.iter().fold(0i16, |a, &b| a * 10 + i16::from(b - b'0'));
    let int = int.trim_start_matches('0').as_bytes();
    let groups = int.len().div_ceil(4) + frac.len().div_ceil(4);
    let mut stack = [0i16; 32];
    let mut heap = Vec::new();
    let digits: &mut [i16] = if groups <= stack.len() {
        &mut stack[..groups]
    } else {
        heap.resize(groups, 0);
        &mut heap
    };
    let mut n = 0;
    // Integer digits in groups of four from the right; the first group may be short.
    let head = int.len() % 4;
    if head > 0 {
        digits[n] = group(&int[..head]);
        n += 1;
    }
    for chunk in int[head..].chunks(4) {
        digits[n] = group(chunk);
        n += 1;
    }
    let mut weight = n as i16 - 1;
    // Fraction digits in groups of four from the left, the last padded with zeros.
    for chunk in frac.as_bytes().chunks(4) {
        let mut g = group(chunk);
        for _ in chunk.len()..4 {
            g *= 10;
        }
        digits[n] = g;
        n += 1;
    }
    let lead = digits[..n].iter().take_while(|&&d| d == 0).count();
    weight -= lead as i16;
    let trail = digits[lead..n]
        .iter()
        .rev()
        .take_while(|&&d| d == 0)
        .count();
    let digits = &digits[lead..n - trail];
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if neg && !digits.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&((8 + 2 * digits.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(frac.len() as i16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// Appends one value's binary field (length, then bytes; -1 for NULL). The value must
/// [`fits`] its type; one that does not is written as NULL (never reached: callers check).
fn write_binary_field(v: &Value, t: BinType, out: &mut Vec<u8>) {
    use chrono::Datelike;
    fn fixed(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    // A decimal's text is checked by the arm that writes it (once, not twice).
    if !matches!((t, v), (BinType::Numeric, Value::Text(_))) && !fits(v, t) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    match (t, v) {
        (_, Value::Null) => out.extend_from_slice(&(-1i32).to_be_bytes()),
        (BinType::Bool, Value::Bool(b)) => fixed(out, &[*b as u8]),
        (BinType::Int2, v) => fixed(out, &(as_i64(v).unwrap_or(0) as i16).to_be_bytes()),
        (BinType::Int4, v) => fixed(out, &(as_i64(v).unwrap_or(0) as i32).to_be_bytes()),
        (BinType::Int8, v) => fixed(out, &as_i64(v).unwrap_or(0).to_be_bytes()),
        // FLOAT columns arrive as the f64 of an f32: narrowing is exact.
        (BinType::Float4, Value::Float(f)) => fixed(out, &(*f as f32).to_be_bytes()),
        (BinType::Float8, Value::Float(f)) => fixed(out, &f.to_be_bytes()),
        (BinType::Text, Value::Text(s)) => fixed(out, s.as_bytes()),
        (BinType::Jsonb, Value::Text(s)) => {
            out.extend_from_slice(&(s.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(s.as_bytes());
        }
        (BinType::Bytea, Value::Bytes(b)) => fixed(out, b),
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
        (BinType::Numeric, Value::Int(i)) => {
            let text = i.to_string();
            let (neg, int) = text
                .strip_prefix('-')
                .map_or((false, text.as_str()), |t| (true, t));
            write_numeric(neg, int, "", out);
        }
        (BinType::Numeric, Value::UInt(u)) => write_numeric(false, &u.to_string(), "", out),
        (BinType::Numeric, Value::Text(s)) => match decimal_parts(s) {
            Some((neg, int, frac)) => write_numeric(neg, int, frac, out),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        },
        _ => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Whether every value of `rows` (columns `cols`, or all) has a binary form for its type.
pub fn binary_fits<'a>(
    rows: impl IntoIterator<Item = &'a Row>,
    cols: Option<&[usize]>,
    types: &[BinType],
) -> bool {
    rows.into_iter().all(|row| match cols {
        Some(cols) => cols.iter().zip(types).all(|(&i, &t)| fits(&row[i], t)),
        None => row.len() == types.len() && row.iter().zip(types).all(|(v, &t)| fits(v, t)),
    })
}

const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// One row as a COPY binary tuple; see [`binary_fits`].
pub fn write_binary_row(row: &Row, cols: Option<&[usize]>, types: &[BinType], out: &mut Vec<u8>) {
    out.extend_from_slice(&(types.len() as i16).to_be_bytes());
    match cols {
        Some(cols) => cols
            .iter()
            .zip(types)
            .for_each(|(&i, &t)| write_binary_field(&row[i], t, out)),
        None => row
            .iter()
            .zip(types)
            .for_each(|(v, &t)| write_binary_field(v, t, out)),
    }
}

/// Encodes rows as a whole COPY binary stream (header, tuples, trailer). Returns false, with
/// `out` untouched, when a value has no binary form for its column.
pub fn encode_binary<'a, I>(rows: I, types: &[BinType], out: &mut Vec<u8>) -> bool
where
    I: IntoIterator<Item = &'a Row> + Clone,
{
    if !binary_fits(rows.clone(), None, types) {
        return false;
    }
    out.extend_from_slice(BINARY_HEADER);
    for row in rows {
        write_binary_row(row, None, types, out);
    }
    out.extend_from_slice(&BINARY_TRAILER);
    true
}

/// The format one COPY uses.
#[derive(Debug, Clone, Copy)]
pub enum Format<'a> {
    Text,
    /// Binary, with the type of each copied column.
    Binary(&'a [BinType]),
}

impl Format<'_> {
    /// The `COPY … FROM STDIN` statement for this format.
    pub fn statement(&self, copy: &str) -> String {
        match self {
            Format::Text => copy.to_string(),
            Format::Binary(_) => format!("{copy} WITH (FORMAT binary)"),
        }
    }
}

/// Picks binary when `types` is known and every value fits, text otherwise.
pub fn choose<'a, 'r>(
    types: Option<&'a [BinType]>,
    rows: impl IntoIterator<Item = &'r Row>,
    cols: Option<&[usize]>,
) -> Format<'a> {
    match types {
        Some(t) if binary_fits(rows, cols, t) => Format::Binary(t),
        _ => Format::Text,
    }
}

/// Runs `copy` (a `COPY … FROM STDIN` statement without format options) on `tx`, sending
/// `rows` (columns `cols`, or all) in `format`, [`CHUNK_BYTES`] at a time through `buf`.
pub async fn copy_rows<R: AsRef<Row> + Sync>(
    tx: &mut PgConnection,
    copy: &str,
    format: Format<'_>,
    rows: &[R],
    cols: Option<&[usize]>,
    buf: &mut Vec<u8>,
) -> Result<u64, sqlx::Error> {
    let mut sink = tx.copy_in_raw(&format.statement(copy)).await?;
    buf.clear();
    if let Format::Binary(_) = format {
        buf.extend_from_slice(BINARY_HEADER);
    }
    for row in rows {
        let row: &Row = row.as_ref();
        match format {
            Format::Text => write_text_row(row, cols, buf),
            Format::Binary(types) => write_binary_row(row, cols, types, buf),
        }
        if buf.len() >= CHUNK_BYTES {
            if let Err(e) = sink.send(buf.as_slice()).await {
                let _ = sink.abort("send failed").await;
                return Err(e);
            }
            buf.clear();
        }
    }
    if let Format::Binary(_) = format {
        buf.extend_from_slice(&BINARY_TRAILER);
    }
    if !buf.is_empty() {
        if let Err(e) = sink.send(buf.as_slice()).await {
            let _ = sink.abort("send failed").await;
            return Err(e);
        }
    }
    buf.clear();
    // A buffer grown by one huge row is not kept for the rest of the run.
    if buf.capacity() > 2 * CHUNK_BYTES {
        *buf = Vec::new();
    }
    sink.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn text(v: Value) -> String {
        let mut out = Vec::new();
        write_text(&v, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The numeric's header (ndigits, weight, sign, dscale) and digits.
    fn numeric(v: Value) -> (Vec<i16>, Vec<i16>) {
        let mut out = Vec::new();
        write_binary_field(&v, BinType::Numeric, &mut out);
        let words: Vec<i16> = out[4..]
            .chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect();
        let len = i32::from_be_bytes([out[0], out[1], out[2], out[3]]);
        assert_eq!(len as usize, out.len() - 4);
        (words[..4].to_vec(), words[4..].to_vec())
    }

    #[test]
    fn numeric_binary_form_is_postgres_base_10000() {
        let t = |s: &str| numeric(Value::Text(s.into()));
        assert_eq!(t("123.45"), (vec![2, 0, 0, 2], vec![123, 4500]));
        assert_eq!(t("0.0001"), (vec![1, -1, 0, 4], vec![1]));
        assert_eq!(t("-10000"), (vec![1, 1, 0x4000, 0], vec![1]));
        assert_eq!(t("0.00"), (vec![0, 0, 0, 2], vec![]));
        assert_eq!(t("-0.50"), (vec![1, -1, 0x4000, 2], vec![5000]));
        assert_eq!(
            t("12345678.000000001"),
            (vec![5, 1, 0, 9], vec![1234, 5678, 0, 0, 1000])
        );
        assert_eq!(numeric(Value::Int(-42)), (vec![1, 0, 0x4000, 0], vec![42]));
        assert_eq!(
            numeric(Value::UInt(18446744073709551615)),
            (vec![5, 4, 0, 0], vec![1844, 6744, 737, 955, 1615])
        );
        // More groups than a DECIMAL has (polling reads any text): still exact.
        let long = format!("1{}.5", "0".repeat(200));
        let mut digits = vec![1];
        digits.extend([0; 50]);
        digits.push(5000);
        assert_eq!(t(&long), (vec![52, 50, 0, 1], digits));
        // Not a plain decimal: COPY text instead.
        for bad in ["1e5", "NaN", "", ".", "1.2.3", "--1"] {
            assert!(!fits(&Value::Text(bad.into()), BinType::Numeric), "{bad}");
        }
    }

    #[test]
    fn copy_text_escapes_what_would_break_a_row() {
        assert_eq!(
            text(Value::Text("a\tb\nc\\d\re".into())),
            "a\\tb\\nc\\\\d\\re"
        );
        assert_eq!(text(Value::Text("plain 😀 'q'".into())), "plain 😀 'q'");
        assert_eq!(text(Value::Null), "\\N");
        assert_eq!(text(Value::Bytes(vec![0, 0xff, 0x10])), "\\\\x00ff10");
    }

    #[test]
    fn parameters_are_plain_text() {
        assert_eq!(
            param_text(&Value::Text("a\tb\\".into())).as_deref(),
            Some("a\tb\\")
        );
        assert_eq!(
            param_text(&Value::Bytes(vec![0, 255])).as_deref(),
            Some("\\x00ff")
        );
        assert_eq!(param_text(&Value::Null), None);
        assert_eq!(param_text(&Value::Int(-3)).as_deref(), Some("-3"));
    }

    #[test]
    fn copy_text_keeps_microseconds_and_full_range() {
        let t = NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_micro_opt(13, 1, 2, 5)
            .unwrap();
        assert_eq!(text(Value::DateTime(t)), "2026-11-25 13:01:02.000005");
        assert_eq!(text(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(text(Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(text(Value::Float(0.1)), "0.1");
        assert_eq!(text(Value::Float(f64::NEG_INFINITY)), "-Infinity");
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
        assert_eq!(BinType::of("numeric(20,0)"), Some(BinType::Numeric));
        assert_eq!(BinType::of("interval"), None);
        assert_eq!(BinType::of("bit(1)"), None);
        assert_eq!(BinType::of("character(10)"), None);
    }

    #[test]
    fn binary_fields_use_postgres_epochs_and_refuse_what_does_not_fit() {
        let enc = |v: Value, t: BinType| {
            let mut out = Vec::new();
            fits(&v, t).then(|| {
                write_binary_field(&v, t, &mut out);
                out
            })
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

    #[test]
    fn a_whole_binary_stream_has_header_and_trailer() {
        let rows = vec![vec![Value::Int(1)], vec![Value::Null]];
        let mut out = Vec::new();
        assert!(encode_binary(&rows, &[BinType::Int8], &mut out));
        assert!(out.starts_with(b"PGCOPY\n\xff\r\n\0"));
        assert!(out.ends_with(&[0xff, 0xff]));
        let mut out = Vec::new();
        assert!(!encode_binary(&rows, &[BinType::Bool], &mut out));
        assert!(out.is_empty());
    }
}
