//! TLS against the real servers: PostgreSQL here serves TLS with Debian's self-signed
//! "snakeoil" certificate (CN localhost), trusted through the system's store
//! (/etc/ssl/certs); MariaDB here offers no TLS. Certificate failures and TLS asked of a
//! server without it are permanent: exit 1 at once, saying what to fix.

mod common;

use std::time::{Duration, Instant};

use common::{wait_output, TestDb};

fn run(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let mut cmd = db.sluice();
    cmd.env("RUST_LOG", "sluice=debug")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = wait_output(cmd.spawn().unwrap(), Duration::from_secs(120));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        start.elapsed(),
    )
}

fn setup(db: &TestDb, extra: &str) -> String {
    assert_eq!(
        db.pg_rows("SHOW ssl")[0][0].as_deref(),
        Some("on"),
        "these tests need PostgreSQL's TLS (Debian's default, ssl = on)"
    );
    db.mysql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1), (2, 2)",
    );
    let cfg = db.config(&format!(
        "{extra}[[tables]]\nname = \"t\"\ncursor = \"id\"\n"
    ));
    cfg.to_str().unwrap().to_string()
}

fn target(db: &TestDb, host: &str, params: &str) -> String {
    db.target_url.replacen("127.0.0.1", host, 1) + params
}

#[test]
fn a_verified_target_connection_trusts_the_system_store_and_is_encrypted() {
    let db = TestDb::new();
    let cfg = setup(&db, "");
    let url = target(&db, "localhost", "?sslmode=verify-full");
    let (code, out, _) = run(
        &db,
        &["--config", &cfg, "--target", &url, "run", "--once"],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("side=target (PostgreSQL) connection=\"writer 0\" encrypted=true"),
        "{out}"
    );
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.t"), 2);
    // The same with the CA named in the URL, and a store that does not hold it.
    let empty = db.config("");
    db.pg("DROP TABLE public.t; DELETE FROM sluice.replication_state");
    let url = target(
        &db,
        "localhost",
        "?sslmode=verify-full&sslrootcert=/etc/ssl/certs/ssl-cert-snakeoil.pem",
    );
    let store = [
        ("SSL_CERT_FILE", empty.to_str().unwrap()),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let (code, out, _) = run(
        &db,
        &["--config", &cfg, "--target", &url, "run", "--once"],
        &store,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.t"), 2);
    // Without the CA in the store or the URL: not trusted, permanently.
    let url = target(&db, "localhost", "?sslmode=verify-full");
    let (code, out, took) = run(
        &db,
        &["--config", &cfg, "--target", &url, "run", "--once"],
        &store,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("certificate") && out.contains("sslrootcert="),
        "{out}"
    );
    assert!(
        took < Duration::from_secs(10),
        "not retried: {took:?}\n{out}"
    );
}

#[test]
fn a_target_certificate_for_another_name_is_a_permanent_error_saying_what_to_fix() {
    let db = TestDb::new();
    let cfg = setup(&db, "");
    // The certificate names localhost, the URL 127.0.0.1.
    let url = target(&db, "127.0.0.1", "?sslmode=verify-full");
    let (code, out, took) = run(
        &db,
        &["--config", &cfg, "--target", &url, "run", "--once"],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("not valid for name") && out.contains("verify-full also needs the URL's host"),
        "{out}"
    );
    assert!(
        took < Duration::from_secs(10),
        "not retried for 30 s: {took:?}"
    );
    // sslmode=require encrypts without verifying the name.
    let url = target(&db, "127.0.0.1", "?sslmode=require");
    let (code, out, _) = run(
        &db,
        &["--config", &cfg, "--target", &url, "run", "--once"],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.t"), 2);
}

#[test]
fn tls_required_of_a_source_without_it_is_a_permanent_error_in_both_capture_modes() {
    let db = TestDb::new();
    let have_ssl = db.mysql_text("SELECT @@have_ssl");
    assert_ne!(
        have_ssl, "YES",
        "this test expects MariaDB without TLS, as scripts/services.sh sets it up"
    );
    for extra in ["", "[source]\ncapture = \"binlog\"\n"] {
        let cfg = db.config(&format!(
            "{extra}[[tables]]\nname = \"t\"\ncursor = \"id\"\n"
        ));
        let cfg = cfg.to_str().unwrap();
        if extra.is_empty() {
            db.mysql(
                "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1)",
            );
        }
        let url = format!("{}?ssl-mode=REQUIRED", db.source_url);
        let (code, out, took) = run(
            &db,
            &["--config", cfg, "--source", &url, "run", "--once"],
            &[],
        );
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains("does not support TLS") && out.contains("ssl-mode=PREFERRED"),
            "{out}"
        );
        assert!(
            took < Duration::from_secs(10),
            "not retried for 30 s: {took:?}"
        );
    }
}

#[test]
fn the_binlog_stream_prefers_tls_and_falls_back_to_plaintext_as_the_reader_does() {
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT)");
    let cfg = db.config("[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"t\"\n");
    let url = format!("{}?ssl-mode=PREFERRED&charset=utf8mb4", db.source_url);
    let mut run = db.spawn_logged(
        &["--config", cfg.to_str().unwrap(), "--source", &url, "run"],
        &[("RUST_LOG", "sluice=debug")],
    );
    run.wait_for(
        "connection=\"binlog stream\" encrypted=false",
        Duration::from_secs(60),
    );
    db.mysql("INSERT INTO t VALUES (1, 1), (2, 2)");
    common::wait_until("the rows streamed", Duration::from_secs(60), || {
        db.pg_rows("SELECT to_regclass('public.t')::text")[0][0].is_some()
            && db.pg_i64("SELECT count(*) FROM public.t") == 2
    });
    common::signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}
