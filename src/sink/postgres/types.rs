//! The MySQL → PostgreSQL type mapping, by the model's [`Kind`].
//!
//! The mapping, from MySQL type to [`Kind`] and on to the PostgreSQL type, is one table in the
//! book, `docs/src/type-mapping.md`; `tests/docs.rs` checks every row of it against
//! `source::mysql::introspect::map_column` and [`pg_type`].

use crate::model::{Column, Kind};

/// The PostgreSQL type a target column gets for `col`.
pub fn pg_type(col: &Column) -> String {
    if let Some(t) = &col.target_type {
        return t.clone();
    }
    match col.kind {
        Kind::Bool => "boolean".into(),
        Kind::Int { bytes: 1 | 2 } | Kind::UInt { bytes: 1 } | Kind::Year => "smallint".into(),
        Kind::Int { bytes: 3 | 4 } | Kind::UInt { bytes: 2 | 3 } => "integer".into(),
        Kind::Int { .. } | Kind::UInt { bytes: 4 } => "bigint".into(),
        Kind::UInt { .. } => "numeric(20,0)".into(),
        Kind::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
        Kind::Float32 => "real".into(),
        Kind::Float64 => "double precision".into(),
        Kind::Text | Kind::Enum | Kind::Set => "text".into(),
        Kind::Json => "jsonb".into(),
        Kind::Bytes => "bytea".into(),
        Kind::Date => "date".into(),
        Kind::DateTime { fsp } => format!("timestamp({fsp}) without time zone"),
        Kind::Timestamp { fsp } => format!("timestamp({fsp}) with time zone"),
        Kind::Time { .. } => "interval".into(),
        Kind::Bits(n) => format!("bit({n})"),
    }
}

/// `ty` as PostgreSQL's `format_type` writes it (`varchar(80)` → `character varying(80)`,
/// `timestamptz(3)` → `timestamp(3) with time zone`), for the types `[[tables]]
/// column_types` takes; `None` for another.
pub fn normal_type(ty: &str) -> Option<String> {
    let t = ty.trim().to_ascii_lowercase();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let (name, mods) = match t.find('(') {
        Some(open) => {
            let close = t.find(')')?;
            let mods: Vec<u32> = t[open + 1..close]
                .split(',')
                .map(|m| m.trim().parse().ok())
                .collect::<Option<_>>()?;
            let rest = t[close + 1..].trim();
            (
                format!("{} {rest}", t[..open].trim()).trim().to_string(),
                mods,
            )
        }
        None => (t.clone(), Vec::new()),
    };
    let with_mods = |n: &str, max: usize| -> Option<String> {
        (mods.len() <= max).then(|| {
            if mods.is_empty() {
                n.to_string()
            } else {
                let m: Vec<String> = mods.iter().map(u32::to_string).collect();
                format!("{n}({})", m.join(","))
            }
        })
    };
    let stamp = |zone: &str| -> Option<String> {
        (mods.len() <= 1).then(|| match mods.first() {
            Some(p) => format!("timestamp({p}) {zone} time zone"),
            None => format!("timestamp {zone} time zone"),
        })
    };
    match name.as_str() {
        "text" | "jsonb" | "json" | "uuid" | "date" if mods.is_empty() => Some(name),
        "boolean" | "bool" if mods.is_empty() => Some("boolean".into()),
        "smallint" | "int2" if mods.is_empty() => Some("smallint".into()),
        "integer" | "int" | "int4" if mods.is_empty() => Some("integer".into()),
        "bigint" | "int8" if mods.is_empty() => Some("bigint".into()),
        "real" | "float4" if mods.is_empty() => Some("real".into()),
        "double precision" | "float8" if mods.is_empty() => Some("double precision".into()),
        "varchar" | "character varying" => with_mods("character varying", 1),
        "numeric" | "decimal" => with_mods("numeric", 2),
        "timestamp" | "timestamp without time zone" => stamp("without"),
        "timestamptz" | "timestamp with time zone" => stamp("with"),
        _ => None,
    }
}

/// Whether `[[tables]] column_types` may give `col` the target type `ty` (normalised): one
/// that holds each of its values exactly ([`target_type_accepts`]), `text` for any value
/// with a text form, or, for text, `character varying` long enough, or a type whose parse of
/// the text may refuse a value (`jsonb`, `json`, `uuid`: such a value is then a bad row, as
/// `[pipeline] on_bad_row` says).
pub fn override_allowed(col: &Column, ty: &str) -> bool {
    let plain = Column {
        target_type: None,
        ..col.clone()
    };
    if target_type_accepts(&plain, ty) {
        return true;
    }
    let texty = matches!(col.kind, Kind::Text | Kind::Enum | Kind::Set | Kind::Json);
    if ty == "text" {
        return !matches!(col.kind, Kind::Bytes);
    }
    if !texty {
        return false;
    }
    if let Some(n) = ty
        .strip_prefix("character varying(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|n| n.parse::<u64>().ok())
    {
        // The source's own length, `varchar(80)` / `char(12)`; none for TEXT and the like.
        let src: Option<u64> = col
            .source_type
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .and_then(|(n, _)| n.parse().ok());
        return matches!(col.kind, Kind::Text) && src.is_some_and(|s| s <= n);
    }
    matches!(ty, "character varying" | "jsonb" | "json" | "uuid")
}

/// Whether an existing target column of type `have` (as PostgreSQL's `format_type` prints
/// it) holds every value of `col` exactly. The type sluice would create ([`pg_type`]) is
/// always accepted; so are these widenings:
///
/// - integers (and YEAR) into any wider integer type or `numeric` with enough integer digits;
/// - `numeric(p,s)` into `numeric` with at least as many integer and fraction digits;
/// - `real` into `double precision`;
/// - `text` into `character varying` without a length;
/// - `jsonb` into `json`;
/// - `timestamp(n)`, `timestamptz(n)`, `interval` into the same type with precision ≥ n;
/// - `bit(n)` into `bit varying(m)` with m ≥ n.
pub fn target_type_accepts(col: &Column, have: &str) -> bool {
    /// `name(a,b)` → (name, [a, b]); a missing modifier list gives [].
    fn parse(t: &str) -> (String, Vec<u32>) {
        let t = t.trim();
        match t.find('(') {
            Some(open) => {
                let close = t[open..].find(')').map_or(t.len(), |c| open + c);
                let mods = t[open + 1..close]
                    .split(',')
                    .filter_map(|m| m.trim().parse().ok())
                    .collect();
                let name = format!("{}{}", &t[..open], &t[(close + 1).min(t.len())..]);
                (name.split_whitespace().collect::<Vec<_>>().join(" "), mods)
            }
            None => (t.to_string(), Vec::new()),
        }
    }
    let (want_name, want_mods) = parse(&pg_type(col));
    let (have_name, have_mods) = parse(have);
    if have_name == want_name && have_mods == want_mods {
        return true;
    }
    // Integer digits a numeric must have to hold each integer type.
    let int_digits = |t: &str| -> Option<u32> {
        match t {
            "smallint" => Some(5),
            "integer" => Some(10),
            "bigint" => Some(19),
            _ => None,
        }
    };
    let int_rank = |t: &str| {
        ["smallint", "integer", "bigint"]
            .iter()
            .position(|x| *x == t)
    };
    let numeric_holds = |int: u32, frac: u32| -> bool {
        match have_mods.as_slice() {
            [] => true,
            [p] => *p >= int && frac == 0,
            [p, s] => *s >= frac && p.saturating_sub(*s) >= int,
            _ => false,
        }
    };
    let precision_at_least = |n: u32| match have_mods.as_slice() {
        [] => true, // no modifier: microseconds
        [m] => *m >= n,
        _ => false,
    };
    match want_name.as_str() {
        "smallint" | "integer" | "bigint" => match have_name.as_str() {
            "numeric" => numeric_holds(int_digits(&want_name).unwrap_or(0), 0),
            h => matches!((int_rank(h), int_rank(&want_name)), (Some(a), Some(b)) if a >= b),
        },
        "numeric" => {
            let (p, s) = match want_mods.as_slice() {
                [p, s] => (*p, *s),
                [p] => (*p, 0),
                _ => return false,
            };
            have_name == "numeric" && numeric_holds(p - s, s)
        }
        "real" => have_name == "double precision",
        "text" => have_name == "character varying" && have_mods.is_empty(),
        "jsonb" => have_name == "json",
        "timestamp without time zone" | "timestamp with time zone" | "interval" => {
            have_name == want_name && precision_at_least(want_mods.first().copied().unwrap_or(6))
        }
        "bit" => {
            have_name == "bit varying"
                && (have_mods.is_empty() || have_mods[0] >= want_mods.first().copied().unwrap_or(1))
        }
        _ => false,
    }
}

/// Quotes a PostgreSQL identifier: double quotes, with embedded ones doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_are_normalised_and_checked() {
        assert_eq!(
            normal_type("VARCHAR(80)").as_deref(),
            Some("character varying(80)")
        );
        assert_eq!(
            normal_type("timestamptz(3)").as_deref(),
            Some("timestamp(3) with time zone")
        );
        assert_eq!(
            normal_type("decimal(20, 4)").as_deref(),
            Some("numeric(20,4)")
        );
        assert_eq!(normal_type("money"), None);
        let int = Column::new("n", "int(11)", Kind::Int { bytes: 4 });
        assert!(override_allowed(&int, "bigint"));
        assert!(override_allowed(&int, "text"));
        assert!(!override_allowed(&int, "smallint"));
        assert!(!override_allowed(&int, "jsonb"));
        let vc = Column::new("t", "varchar(20)", Kind::Text);
        assert!(override_allowed(&vc, "character varying(20)"));
        assert!(!override_allowed(&vc, "character varying(19)"));
        assert!(override_allowed(&vc, "jsonb") && override_allowed(&vc, "uuid"));
        let text = Column::new("t", "text", Kind::Text);
        assert!(!override_allowed(&text, "character varying(100)"));
        let dec = Column::new(
            "d",
            "decimal(10,2)",
            Kind::Decimal {
                precision: 10,
                scale: 2,
            },
        );
        assert!(override_allowed(&dec, "numeric(20,4)"));
        assert!(!override_allowed(&dec, "numeric(5,1)"));
        let bytes = Column::new("b", "blob", Kind::Bytes);
        assert!(!override_allowed(&bytes, "text"));
    }

    fn col(kind: Kind) -> Column {
        Column {
            name: "c".into(),
            source_type: "t".into(),
            kind,
            nullable: false,
            null_on_zero_date: false,
            default: None,
            renamed_from: None,
            target_type: None,
        }
    }

    #[test]
    fn kinds_map_to_the_documented_types() {
        assert_eq!(pg_type(&col(Kind::UInt { bytes: 8 })), "numeric(20,0)");
        assert_eq!(pg_type(&col(Kind::UInt { bytes: 4 })), "bigint");
        assert_eq!(pg_type(&col(Kind::Int { bytes: 3 })), "integer");
        assert_eq!(pg_type(&col(Kind::Int { bytes: 1 })), "smallint");
        assert_eq!(
            pg_type(&col(Kind::DateTime { fsp: 6 })),
            "timestamp(6) without time zone"
        );
        assert_eq!(pg_type(&col(Kind::Bits(5))), "bit(5)");
    }

    #[test]
    fn target_types_accept_the_mapping_and_documented_widenings() {
        let ok = |c: &Column, have: &str| target_type_accepts(c, have);
        let int = col(Kind::Int { bytes: 4 });
        assert!(ok(&int, "integer") && ok(&int, "bigint") && ok(&int, "numeric"));
        assert!(ok(&int, "numeric(10,0)") && !ok(&int, "numeric(9,0)"));
        assert!(!ok(&int, "smallint") && !ok(&int, "text") && !ok(&int, "real"));
        let u64c = col(Kind::UInt { bytes: 8 });
        assert!(ok(&u64c, "numeric(20,0)") && ok(&u64c, "numeric") && !ok(&u64c, "bigint"));
        let dec = col(Kind::Decimal {
            precision: 30,
            scale: 10,
        });
        assert!(ok(&dec, "numeric(30,10)") && ok(&dec, "numeric(40,12)") && ok(&dec, "numeric"));
        assert!(!ok(&dec, "numeric(30,9)") && !ok(&dec, "numeric(29,10)"));
        let dt = col(Kind::DateTime { fsp: 6 });
        assert!(
            ok(&dt, "timestamp without time zone") && ok(&dt, "timestamp(6) without time zone")
        );
        assert!(
            !ok(&dt, "timestamp(3) without time zone") && !ok(&dt, "timestamp(6) with time zone")
        );
        let txt = col(Kind::Text);
        assert!(
            ok(&txt, "text") && ok(&txt, "character varying") && !ok(&txt, "character varying(10)")
        );
        let b = col(Kind::Bits(5));
        assert!(
            ok(&b, "bit(5)")
                && ok(&b, "bit varying(8)")
                && !ok(&b, "bit(4)")
                && !ok(&b, "bit varying(4)")
        );
        let f = col(Kind::Float32);
        assert!(ok(&f, "real") && ok(&f, "double precision") && !ok(&f, "numeric"));
        let bool_c = col(Kind::Bool);
        assert!(ok(&bool_c, "boolean") && !ok(&bool_c, "smallint"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("Mi\"xed"), "\"Mi\"\"xed\"");
    }
}
