//! Row values between the two databases: decoded once from the source, encoded once for
//! the target (see `sink::postgres::copy`), and (for keyset columns) stored as typed JSON in
//! a polling position and bound back into the next read.

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

    /// Bytes the value takes in memory: its inline size and what it holds on the heap.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Value>() + self.heap_bytes()
    }

    /// What the value holds on the heap, as the allocator counts it.
    fn heap_bytes(&self) -> usize {
        match self {
            Value::Text(s) => allocation(s.capacity()),
            Value::Bytes(b) => allocation(b.capacity()),
            _ => 0,
        }
    }
}

/// What an allocation of `n` bytes takes from the allocator: glibc's malloc adds an 8-byte
/// header, rounds up to 16 and hands out 32 bytes at least. A row of short strings holds
/// as much in this overhead as in its characters, so the memory bound counts it.
pub fn allocation(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8).div_ceil(16) * 16).max(32)
    }
}

/// Bytes a row takes in memory: what batches, pages and channels are bounded by.
pub fn row_bytes(row: &Row) -> usize {
    std::mem::size_of::<Row>()
        + allocation(row.capacity() * std::mem::size_of::<Value>())
        + row.iter().map(Value::heap_bytes).sum::<usize>()
}

/// Bytes a boxed run of values (an old key) takes in memory.
pub fn values_bytes(values: &[Value]) -> usize {
    allocation(std::mem::size_of_val(values)) + values.iter().map(Value::heap_bytes).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn row_bytes_count_the_heap() {
        let small = vec![Value::Int(1)];
        let big = vec![Value::Bytes(vec![0; 1 << 20])];
        assert!(row_bytes(&small) < 100);
        assert!(row_bytes(&big) > 1 << 20);
        // glibc's chunks: an 8-byte header, rounded up to 16, 32 at least.
        assert_eq!(
            (allocation(0), allocation(1), allocation(24), allocation(36)),
            (0, 32, 32, 48)
        );
        let uuid = vec![Value::Text("0".repeat(36)), Value::Int(1)];
        assert_eq!(row_bytes(&uuid), 24 + allocation(64) + 48);
    }
}
