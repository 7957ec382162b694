//! Text of any character set MariaDB has, as a SELECT reads it.
//!
//! A row image carries a text column's own bytes, in the column's character set (the table
//! map says which, as a collation id); a SELECT (the snapshot, polling) gets them converted to
//! UTF-8 by the server. So that both give the same text, each collation id is mapped, once per
//! connection, to its character set, and:
//! - a single-byte character set (latin1, cp1251, koi8r, ascii, … every one the server has) is
//!   decoded through a table of its 256 bytes that the server itself converted
//!   (`CONVERT(… USING utf8mb4)`): exactly what a SELECT gives, including MySQL's latin1 (which
//!   is cp1252 with five bytes mapped to C1 controls) and a latin1 column that holds the bytes
//!   of another encoding;
//! - a multi-byte one through its WHATWG decoder (`encoding_rs`: sjis and cp932 as
//!   Shift_JIS, ujis and eucjpms as EUC-JP, euckr, gbk and gb2312 as GBK, big5), UTF-16 (big- and
//!   little-endian; ucs2 is big-endian UTF-16), and UTF-32 here; bytes that are not valid text
//!   in it stop the table, naming the character set (a SELECT would show `?` there);
//! - utf8mb3 and utf8mb4 are UTF-8; `binary` columns stay bytes (they are not text).

use std::collections::HashMap;
use std::sync::Arc;

use encoding_rs::Encoding;
use mysql_async::prelude::Queryable;

/// How one column's bytes become text.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Codec {
    #[default]
    Utf8,
    /// A single-byte character set: each byte's character, as the server converts it.
    Table {
        name: String,
        chars: Arc<[char]>,
    },
    Multi(&'static Encoding),
    /// UTF-32, big-endian (MySQL's `utf32`).
    Utf32,
    /// A character set sluice could not learn from the server (named): ASCII passes, any
    /// other byte stops the table rather than be read in a guessed encoding.
    Unknown(String),
}

impl Codec {
    /// [`Codec::decode`] of bytes the caller owns: UTF-8 text becomes a `String` in place.
    pub fn decode_owned(&self, b: Vec<u8>) -> Result<String, String> {
        match self {
            Codec::Utf8 => {
                String::from_utf8(b).map_err(|_| "it is not valid UTF-8 text".to_string())
            }
            _ => self.decode(&b),
        }
    }

    pub fn decode(&self, b: &[u8]) -> Result<String, String> {
        match self {
            Codec::Utf8 => {
                String::from_utf8(b.to_vec()).map_err(|_| "it is not valid UTF-8 text".to_string())
            }
            Codec::Table { chars, .. } => Ok(b.iter().map(|&x| chars[usize::from(x)]).collect()),
            Codec::Multi(e) => {
                let (s, bad) = e.decode_without_bom_handling(b);
                if bad {
                    Err(format!("it is not valid {} text", e.name()))
                } else {
                    Ok(s.into_owned())
                }
            }
            Codec::Utf32 => {
                if !b.len().is_multiple_of(4) {
                    return Err("it is not valid UTF-32 text".into());
                }
                b.chunks_exact(4)
                    .map(|c| {
                        char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .ok_or_else(|| "it is not valid UTF-32 text".to_string())
                    })
                    .collect()
            }
            Codec::Unknown(name) if !b.is_ascii() => Err(format!(
                "its character set ({name}) is not one sluice could read from the server, and the value is not plain ASCII"
            )),
            Codec::Unknown(_) => Ok(b.iter().map(|&x| char::from(x)).collect()),
        }
    }

    /// The decoder of a multi-byte character set (by MariaDB's name); `None` for single-byte
    /// ones (the server's table says those) and unknown names.
    fn multi_byte(charset: &str) -> Option<Codec> {
        use encoding_rs::*;
        Some(match charset {
            "utf8" | "utf8mb3" | "utf8mb4" => Codec::Utf8,
            "sjis" | "cp932" => Codec::Multi(SHIFT_JIS),
            "ujis" | "eucjpms" => Codec::Multi(EUC_JP),
            "euckr" => Codec::Multi(EUC_KR),
            "gbk" | "gb2312" => Codec::Multi(GBK),
            "gb18030" => Codec::Multi(GB18030),
            "big5" => Codec::Multi(BIG5),
            "utf16" | "ucs2" => Codec::Multi(UTF_16BE),
            "utf16le" => Codec::Multi(UTF_16LE),
            "utf32" => Codec::Utf32,
            _ => return None,
        })
    }
}

/// Every collation id of the server, as the codec of its character set.
#[derive(Debug, Default)]
pub struct Charsets {
    by_collation: HashMap<u16, Codec>,
}

impl Charsets {
    /// The codec of collation `id` (one the server did not list reads only ASCII).
    pub fn codec(&self, id: u16) -> Codec {
        self.by_collation
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Codec::Unknown(format!("collation id {id}")))
    }

    /// Reads the server's collations and character sets (a few queries, once per connection).
    pub async fn load(conn: &mut mysql_async::Conn) -> Result<Charsets, mysql_async::Error> {
        // MariaDB 10.10 and later list every collation id (the UCA 14.0 ones too) here;
        // COLLATIONS lists the classic ones (and is what older servers and MySQL have).
        let ids: Vec<(u64, String)> = match conn
            .query(
                "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY WHERE ID IS NOT NULL",
            )
            .await
        {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(_)) => {
                conn.query(
                    "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL",
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        let single: Vec<String> = conn
            .query(
                "SELECT CHARACTER_SET_NAME FROM information_schema.CHARACTER_SETS WHERE MAXLEN = 1 AND CHARACTER_SET_NAME <> 'binary' ORDER BY 1",
            )
            .await?;
        let tables = single_byte_tables(conn, &single).await?;
        let by_collation = ids
            .into_iter()
            .filter_map(|(id, cs)| {
                let codec = tables
                    .get(&cs)
                    .cloned()
                    .or_else(|| Codec::multi_byte(&cs))
                    .unwrap_or(Codec::Unknown(cs));
                Some((u16::try_from(id).ok()?, codec))
            })
            .collect();
        Ok(Charsets { by_collation })
    }
}

/// Each single-byte character set's 256 characters, converted by the server (one query).
async fn single_byte_tables(
    conn: &mut mysql_async::Conn,
    names: &[String],
) -> Result<HashMap<String, Codec>, mysql_async::Error> {
    let names: Vec<&String> = names
        .iter()
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let all: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let list: Vec<String> = names
        .iter()
        .map(|n| format!("CONVERT(CONVERT(UNHEX('{all}') USING {n}) USING utf8mb4)"))
        .collect();
    let row: Option<mysql_async::Row> = conn
        .query_first(format!("SELECT {}", list.join(", ")))
        .await?;
    let mut out = HashMap::new();
    if let Some(row) = row {
        for (i, name) in names.iter().enumerate() {
            let Some(Some(text)) = row.get::<Option<String>, _>(i) else {
                continue;
            };
            let chars: Vec<char> = text.chars().collect();
            if chars.len() == 256 {
                out.insert(
                    (*name).clone(),
                    Codec::Table {
                        name: (*name).clone(),
                        chars: chars.into(),
                    },
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_sets_decode_and_bad_bytes_are_named() {
        let sjis = Codec::multi_byte("sjis").unwrap();
        assert_eq!(sjis.decode(b"\x82\xa0").unwrap(), "あ");
        assert_eq!(
            Codec::multi_byte("utf16")
                .unwrap()
                .decode(b"\x00A\x04\x10")
                .unwrap(),
            "AА"
        );
        assert_eq!(
            Codec::multi_byte("utf16le")
                .unwrap()
                .decode(b"A\x00")
                .unwrap(),
            "A"
        );
        assert_eq!(Codec::Utf32.decode(b"\x00\x01\xf6\x00").unwrap(), "😀");
        assert!(Codec::Utf32.decode(b"\x00\x11\x00\x00").is_err());
        assert!(Codec::Utf32.decode(b"\x00\x00").is_err());
        assert_eq!(
            Codec::multi_byte("big5")
                .unwrap()
                .decode(b"\xff")
                .unwrap_err(),
            "it is not valid Big5 text"
        );
        assert!(Codec::Utf8.decode(b"\xe9").is_err());
        assert_eq!(
            Codec::multi_byte("latin1"),
            None,
            "single-byte: the server's table"
        );
        let table = Codec::Table {
            name: "x".into(),
            chars: (0..=255u8).map(char::from).collect::<Vec<_>>().into(),
        };
        assert_eq!(table.decode(b"\xe9t\xe9").unwrap(), "été");
        let unknown = Charsets::default();
        assert_eq!(unknown.codec(8), Codec::Unknown("collation id 8".into()));
        assert_eq!(unknown.codec(8).decode(b"plain").unwrap(), "plain");
        assert!(unknown.codec(8).decode("é".as_bytes()).is_err());
    }
}
