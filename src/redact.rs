//! Secrets never leave the process in text. Every line sluice prints goes through
//! [`redact_text`]: the log writer ([`Stderr`], text and JSON, every level, the database
//! libraries' own lines included) and the final error `main` prints. It masks
//!
//! - the passwords of URLs and URL-like strings (`scheme://user:secret@host`, and malformed
//!   ones such as `mysql:user:secret@host/db`),
//! - `password=secret` parameters,
//! - every password sluice was given (in a URL, a password file, `SLUICE_*_PASSWORD` or
//!   `PGPASSWORD`), registered with [`register`] as settings are read, wherever it appears,
//!   in the forms JSON, `Debug` and percent-encoding give it.

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

const MASK: &str = "***";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret: from now on it is masked wherever it appears in printed text.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut forms = vec![secret.to_string()];
    let debug = format!("{secret:?}");
    forms.push(debug[1..debug.len() - 1].to_string());
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        if !f.is_empty() && !secrets.contains(&f) {
            secrets.push(f);
        }
    }
    // Longest first, so that a secret holding another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the password a URL (or a malformed URL-like string) holds, as written and
/// percent-decoded, and its `password=` parameter.
pub fn register_url(raw: &str) {
    if let Ok(url) = url::Url::parse(raw) {
        if let Some(pw) = url.password() {
            register(pw);
            register(&percent_encoding::percent_decode_str(pw).decode_utf8_lossy());
        }
        for (k, v) in url.query_pairs() {
            if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") {
                register(&v);
            }
        }
    }
    // `user:secret@host` anywhere in it, parsed or not.
    let masked = mask_userinfo(raw);
    if masked != raw {
        if let Some(at) = raw.rfind('@') {
            let head = &raw[..at];
            if let Some(colon) = head.rfind(':') {
                register(&head[colon + 1..]);
            }
        }
    }
}

/// The URL with its password replaced by `***`, for logs and errors. A string that is not
/// a URL with a host shows only its scheme, since it may still hold a secret.
pub fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.has_host() => {
            if url.password().is_some() {
                let _ = url.set_password(Some(MASK));
            }
            redact_text(url.as_str())
        }
        _ => match raw.split_once(':') {
            Some((scheme, _)) if !scheme.is_empty() && !scheme.contains(['@', '/']) => {
                format!("{scheme}:…")
            }
            _ => "<unparseable URL>".into(),
        },
    }
}

/// Any text (an error message, a log line) with every secret in it masked (see the module).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    // Tokens end at whitespace, quotes and brackets: a URL never holds them unencoded.
    let is_sep = |c: char| c.is_whitespace() || "\"'`()<>[]{},".contains(c);
    for c in text.chars() {
        if is_sep(c) {
            out.push_str(&mask_userinfo(&token));
            token.clear();
            out.push(c);
        } else {
            token.push(c);
        }
    }
    out.push_str(&mask_userinfo(&token));
    let out = mask_password_params(&out);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = out;
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// `scheme://user:secret@host…`, `scheme:user:secret@host…` or `user:secret@host` with the
/// secret masked; any other token unchanged.
fn mask_userinfo(token: &str) -> Cow<'_, str> {
    if !token.contains('@') || !token.contains(':') {
        return Cow::Borrowed(token);
    }
    // After the scheme (`mysql:` or `mysql://`), if there is one.
    let scheme_end = match token.find(':') {
        Some(i)
            if i > 0
                && token[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
        {
            let rest = &token[i + 1..];
            i + 1 + if rest.starts_with("//") { 2 } else { 0 }
        }
        _ => 0,
    };
    for start in [scheme_end, 0] {
        let rest = &token[start..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let auth = &rest[..auth_end];
        if let Some(at) = auth.rfind('@') {
            if let Some(colon) = auth[..at].find(':') {
                if colon + 1 < at {
                    return Cow::Owned(format!(
                        "{}{}{MASK}{}",
                        &token[..start],
                        &auth[..colon + 1],
                        &token[start + at..]
                    ));
                }
            }
        }
    }
    Cow::Borrowed(token)
}

/// `password=secret` (URL parameters, key=value strings) with the secret masked.
fn mask_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut masked = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(i) = lower[from..].find("password=") {
        let value = from + i + "password=".len();
        masked.push_str(&text[from..value]);
        let end = text[value..]
            .find(|c: char| c == '&' || c.is_whitespace() || "\"',;)".contains(c))
            .map_or(text.len(), |e| value + e);
        if end > value {
            masked.push_str(MASK);
        }
        from = end;
    }
    masked.push_str(&text[from..]);
    masked
}

/// The log writer: standard error, every line redacted first.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact_text(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_parameters_are_masked_anywhere_in_a_message() {
        assert_eq!(
            redact_text("cannot connect to mysql://u:s3cret@h:1/db (mysql://x@y/z)"),
            "cannot connect to mysql://u:***@h:1/db (mysql://x@y/z)"
        );
        assert_eq!(
            redact_text("postgres://h/db?sslmode=require&password=s3cret&x=1"),
            "postgres://h/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact_text(r#"{"error":"url = \"mysql://root:pw1@127.0.0.1:3306/test"}"#),
            r#"{"error":"url = \"mysql://root:***@127.0.0.1:3306/test"}"#
        );
        assert_eq!(
            redact_text("no secrets here: a:b c@d"),
            "no secrets here: a:b c@d"
        );
        assert_eq!(redact_text("at 12:30 mail me@x"), "at 12:30 mail me@x");
    }

    #[test]
    fn malformed_urls_are_masked() {
        assert_eq!(
            redact_text("mysql:root:S3CRET@host/db names no host"),
            "mysql:root:***@host/db names no host"
        );
        assert_eq!(redact_text("root:S3CRET@host"), "root:***@host");
        assert_eq!(redact("mysql:root:S3CRET@host/db"), "mysql:…");
        assert_eq!(redact("not a url at all"), "<unparseable URL>");
    }

    #[test]
    fn redact_hides_passwords_in_the_authority_and_the_query() {
        assert_eq!(redact("mysql://u:pw@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(redact("mysql://u@h:3306/db"), "mysql://u@h:3306/db");
        assert_eq!(
            redact("mysql://u@h:3306/db?password=zz&ssl-mode=REQUIRED"),
            "mysql://u@h:3306/db?password=***&ssl-mode=REQUIRED"
        );
    }

    #[test]
    fn registered_secrets_are_masked_in_every_form() {
        register("Reg1stered\"pw\\x");
        assert_eq!(redact_text("saw Reg1stered\"pw\\x here"), "saw *** here");
        // As JSON and Debug escape it.
        assert_eq!(redact_text(r#"saw "Reg1stered\"pw\\x""#), r#"saw "***""#);
        register_url("mysql://u:p%40ssW0rd-reg@h/db");
        assert_eq!(redact_text("password p@ssW0rd-reg"), "password ***");
        register_url("mysql:u:Malf0rmed-reg@h/db");
        assert_eq!(redact_text("it was Malf0rmed-reg"), "it was ***");
    }
}
