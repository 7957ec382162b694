//! TLS on both sides: what the URLs ask for is the drivers' business (`sslmode=` for
//! PostgreSQL, `ssl-mode=` for MySQL, see `docs/src/operations/passwords-and-tls.md`); this module says what happened.
//! A connection in plaintext to a host that is not this machine is logged at warn, once
//! per side; a certificate the client cannot trust is a permanent error saying what to fix.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, warn};

/// What to do about a TLS failure, to follow its message.
pub use crate::error::tls_hint as hint;
use crate::error::Side;

static WARNED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// True when the URL's host is this machine: a loopback address, `localhost`, or a Unix
/// socket (PostgreSQL's `host=/dir`, MySQL's `socket=`).
pub fn is_local(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    if u.query_pairs().any(|(k, _)| k == "socket") {
        return true;
    }
    // mysql:// and postgres:// are not "special" schemes: their hosts are opaque strings.
    let Some(host) = u.host_str() else {
        return true;
    };
    let host = percent_encoding::percent_decode_str(host).decode_utf8_lossy();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            host.eq_ignore_ascii_case("localhost") || host.starts_with('/') || host.is_empty()
        }
    }
}

/// Records whether a new connection to `url` is encrypted; warns (once per side) when it is
/// not and the server is another machine.
pub fn note(side: Side, url: &str, what: &str, encrypted: bool) {
    debug!(%side, connection = what, encrypted, "connected");
    if encrypted || is_local(url) {
        return;
    }
    let i = match side {
        Side::Source => 0,
        Side::Target => 1,
    };
    if !WARNED[i].swap(true, Ordering::Relaxed) {
        let fix = match side {
            Side::Source => "add ssl-mode=REQUIRED (or VERIFY_IDENTITY with ssl-ca=/path/ca.pem) to the source URL to refuse plaintext",
            Side::Target => "add sslmode=require (or verify-full with sslrootcert=/path/ca.pem) to the target URL to refuse plaintext",
        };
        warn!(
            %side,
            host = %crate::urls::host_port(url),
            "connection is not encrypted: the server offers no TLS or the URL disables it; {fix}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_loopback_localhost_and_sockets() {
        assert!(is_local("mysql://root@127.0.0.1:3306/test"));
        assert!(is_local("mysql://root@127.1.2.3/test"));
        assert!(is_local("postgres://u@localhost/x"));
        assert!(is_local("postgres://u@[::1]:5432/x"));
        assert!(is_local("postgres://u@%2Fvar%2Frun%2Fpostgresql/x"));
        assert!(is_local("mysql://u@h/x?socket=/run/mysqld/mysqld.sock"));
        assert!(!is_local("mysql://u@db.example.com/x"));
        assert!(!is_local("postgres://u@10.0.0.5:5432/x"));
        assert!(!is_local("postgres://u@[2001:db8::1]/x"));
    }
}
