//! What binlog capture needs of the source server, checked once at start: a refusal names
//! every setting or privilege that is missing and how to change it.

use sea_orm::sqlx::{self, MySqlConnection, Row as _};

use crate::error::{Error, Result, Side};
use crate::source::mysql::Flavor;

/// Checks the server's binlog settings and the user's privileges.
pub async fn check_server(conn: &mut MySqlConnection) -> Result<Flavor> {
    let flavor = Flavor::detect(conn).await?;
    let row = sqlx::query(
        "SELECT CAST(@@log_bin AS SIGNED), CAST(@@binlog_format AS CHAR), \
                CAST(@@binlog_row_image AS CHAR), CAST(@@binlog_row_metadata AS CHAR)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        Error::db(
            Side::Source,
            "reading the binlog settings (log_bin, binlog_format, binlog_row_image, binlog_row_metadata; MariaDB 10.5 or MySQL 8.0 at least)",
            &e,
        )
    })?;
    let get = |i: usize| -> String { row.try_get::<String, _>(i).unwrap_or_default() };
    let log_bin: i64 = row.try_get(0).unwrap_or(0);
    let mut problems = Vec::new();
    if log_bin != 1 {
        problems.push(
            "log_bin is OFF: add `log_bin = mysql-bin` to [mysqld] and restart the server"
                .to_string(),
        );
    }
    for (name, have, want) in [
        ("binlog_format", get(1), "ROW"),
        ("binlog_row_image", get(2), "FULL"),
        ("binlog_row_metadata", get(3), "FULL"),
    ] {
        if !have.eq_ignore_ascii_case(want) {
            problems.push(format!(
                "{name} is {have:?}, and binlog capture needs {want}: run SET GLOBAL {name} = '{want}' and add `{name} = {want}` to [mysqld] in the server's my.cnf (scripts/services.sh does both for the local server)"
            ));
        }
    }
    let grants: Vec<String> = sqlx::query("SHOW GRANTS")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| {
            Error::db(
                Side::Source,
                "reading the user's privileges (SHOW GRANTS)",
                &e,
            )
        })?
        .iter()
        .filter_map(|r| {
            r.try_get::<String, _>(0).ok().or_else(|| {
                r.try_get::<Vec<u8>, _>(0)
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into())
            })
        })
        .collect();
    let missing = missing_privileges(&grants, flavor);
    if !missing.is_empty() {
        problems.push(format!(
            "the source user lacks {}: GRANT {} ON *.* TO <user> (and SELECT on the replicated tables)",
            missing.join(" and "),
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(flavor)
    } else {
        Err(Error::Config(format!(
            "the source server cannot serve binlog capture: {}",
            problems.join("; ")
        )))
    }
}

/// The global privileges binlog capture needs that `grants` (SHOW GRANTS lines) do not give.
pub fn missing_privileges(grants: &[String], flavor: Flavor) -> Vec<&'static str> {
    let global: Vec<String> = grants
        .iter()
        .map(|g| g.to_ascii_uppercase())
        .filter(|g| g.contains(" ON *.* "))
        .collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(p))
    };
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        missing.push("REPLICATION SLAVE");
    }
    // MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR (the old name still grants it).
    let client = if flavor.mariadb {
        has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER")
    } else {
        has("REPLICATION CLIENT") || has("SUPER")
    };
    if !client {
        missing.push("REPLICATION CLIENT");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_read_from_show_grants() {
        let maria = Flavor::parse("10.11.9-MariaDB");
        let all =
            vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION".to_string()];
        assert!(missing_privileges(&all, maria).is_empty());
        let some = vec![
            "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `sluice`@`%`".to_string(),
        ];
        assert!(missing_privileges(&some, maria).is_empty());
        let select = vec![
            "GRANT USAGE ON *.* TO `sluice`@`%`".to_string(),
            "GRANT SELECT ON `shop`.* TO `sluice`@`%`".to_string(),
        ];
        assert_eq!(
            missing_privileges(&select, maria),
            vec!["REPLICATION SLAVE", "REPLICATION CLIENT"]
        );
        let mysql = Flavor::parse("8.4.3");
        let m = vec![
            "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `s`@`%`".to_string(),
        ];
        assert!(missing_privileges(&m, mysql).is_empty());
    }
}
