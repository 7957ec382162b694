//! What a connection URL names, for messages and defaults (never its password: see
//! [`crate::redact`]).

/// The database a URL names (its path), or `""`.
pub fn database_of(raw: &str) -> String {
    url::Url::parse(raw)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// `host:port` of a URL, for "cannot reach" messages.
pub fn host_port(raw: &str) -> String {
    url::Url::parse(raw)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port_or_known_default()
                    .or(match u.scheme() {
                        "mysql" | "mariadb" => Some(3306),
                        "postgres" | "postgresql" => Some(5432),
                        _ => None,
                    })
                    .map_or("?".into(), |p| p.to_string())
            )
        })
        .unwrap_or_else(|| "<unparseable URL>".into())
}
