//! The TOML file as written (every key optional, unknown keys refused), and the URLs and
//! passwords read from it and from the environment.

use std::path::Path;

use serde::Deserialize;

use super::{Capture, Cluster, OnBinlogGone, Pipeline, Retry, TableSettings, Verify, ZeroDates};
use crate::error::{Error, Result};
use crate::redact::redact;

/// The TOML file, as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub(super) source: FileSource,
    #[serde(default)]
    pub(super) target: FileTarget,
    #[serde(default)]
    pub(super) pipeline: Pipeline,
    #[serde(default)]
    pub(super) retry: Retry,
    #[serde(default)]
    pub(super) verify: Verify,
    #[serde(default)]
    pub(super) cluster: Cluster,
    #[serde(default)]
    pub(super) tables: Vec<TableSettings>,
    #[serde(default)]
    pub(super) http: FileHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHttp {
    pub(super) addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSource {
    pub(super) url: Option<String>,
    pub(super) password_file: Option<std::path::PathBuf>,
    pub(super) safety_lag_ms: Option<u64>,
    pub(super) zero_dates: Option<ZeroDates>,
    pub(super) datetime_zone: Option<String>,
    pub(super) capture: Option<Capture>,
    pub(super) server_id: Option<u32>,
    pub(super) on_binlog_gone: Option<OnBinlogGone>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTarget {
    pub(super) url: Option<String>,
    pub(super) password_file: Option<std::path::PathBuf>,
    pub(super) lock_timeout_ms: Option<u64>,
    pub(super) ddl_wait_ms: Option<u64>,
    pub(super) schema: Option<String>,
}

/// The password a side is given apart from its URL, and where it came from: the
/// environment (`SLUICE_SOURCE_PASSWORD`, `SLUICE_SOURCE_PASSWORD_FILE`) or the file's
/// `[source] password_file` (and the same for `target`). At most one of them.
pub(super) fn password_apart(side: &str, file: Option<&Path>) -> Result<Option<(String, String)>> {
    let upper = side.to_ascii_uppercase();
    let env_pw = format!("SLUICE_{upper}_PASSWORD");
    let env_file = format!("SLUICE_{upper}_PASSWORD_FILE");
    let mut given: Vec<(String, String)> = Vec::new();
    if let Ok(pw) = std::env::var(&env_pw) {
        crate::redact::register(&pw);
        given.push((pw, env_pw.clone()));
    }
    let env_path = std::env::var_os(&env_file).map(std::path::PathBuf::from);
    for (path, from) in [
        (env_path.as_deref(), env_file.clone()),
        (file, format!("[{side}] password_file")),
    ] {
        let Some(path) = path else { continue };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "{from}: cannot read the password file {}: {e}",
                path.display()
            ))
        })?;
        let pw = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_string();
        crate::redact::register(&pw);
        if pw.is_empty() {
            return Err(Error::Config(format!(
                "{from}: the password file {} is empty",
                path.display()
            )));
        }
        given.push((pw, format!("{from} ({})", path.display())));
    }
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(_, from)| from.as_str()).collect();
        return Err(Error::Config(format!(
            "the {side} password is given {} ways ({}); keep one",
            given.len(),
            names.join(", ")
        )));
    }
    Ok(given.pop())
}

/// `raw` with `password` set as its password; refused when the URL holds one already.
pub(super) fn with_password(raw: &str, password: &str, side: &str, from: &str) -> Result<String> {
    let mut url = url::Url::parse(raw)
        .map_err(|e| Error::Config(format!("{side} URL {} is not valid: {e}", redact(raw))))?;
    if url.password().is_some() {
        return Err(Error::Config(format!(
            "the {side} password is given twice: in the URL {} and by {from}; keep one (a password file keeps it out of the URL)",
            redact(raw)
        )));
    }
    url.set_password(Some(password)).map_err(|()| {
        Error::Config(format!("{side} URL {} cannot hold a password", redact(raw)))
    })?;
    Ok(url.to_string())
}

pub(super) fn check_url(key: &str, raw: &str, schemes: &[&str]) -> Result<()> {
    let url = url::Url::parse(raw)
        .map_err(|e| Error::Config(format!("{key}: {:?} is not a URL ({e})", redact(raw))))?;
    if !schemes.contains(&url.scheme()) {
        return Err(Error::Config(format!(
            "{key}: scheme {:?} in {} is not supported; use {}://user@host:port/database",
            url.scheme(),
            redact(raw),
            schemes[0]
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "{key}: {} names no host",
            redact(raw)
        )));
    }
    if url.path().trim_start_matches('/').is_empty() {
        return Err(Error::Config(format!(
            "{key}: {} names no database; add it as the path, e.g. /test",
            redact(raw)
        )));
    }
    Ok(())
}
