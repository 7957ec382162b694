//! Passwords never appear in anything sluice prints: text and JSON logs at trace level (the
//! database libraries' lines included), errors, configuration errors quoting the file; and
//! passwords can be kept out of URLs altogether (password files, `SLUICE_*_PASSWORD`).

mod common;

use std::process::Output;
use std::time::Duration;

use common::{wait_output, TestDb};

/// Runs sluice with `env` added, in both log formats at trace level, and returns each
/// output (stdout and stderr together) with its exit code.
fn run_both_formats(
    db: &TestDb,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<(Option<i32>, String)> {
    ["text", "json"]
        .iter()
        .map(|format| {
            let mut cmd = db.sluice();
            cmd.env("RUST_LOG", "trace")
                .args(["--log-format", format])
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out: Output = wait_output(cmd.spawn().unwrap(), Duration::from_secs(120));
            (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
        .collect()
}

fn assert_hidden(outs: &[(Option<i32>, String)], secret: &str) {
    for (_, all) in outs {
        assert!(!all.is_empty());
        assert!(
            !all.contains(secret),
            "the password {secret} leaked:\n{all}"
        );
    }
}

#[test]
fn a_password_as_a_url_parameter_is_not_printed() {
    let db = TestDb::new();
    let cfg =
        db.config("[retry]\nconnect_timeout_ms = 300\n[[tables]]\nname = \"t\"\ncursor = \"id\"\n");
    let outs = run_both_formats(
        &db,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--source",
            "mysql://root@127.0.0.1:1/nope?password=Param-pw-71",
            "run",
            "--once",
        ],
        &[],
    );
    for (code, all) in &outs {
        assert_eq!(*code, Some(1), "{all}");
        assert!(all.contains("127.0.0.1:1"), "{all}");
    }
    assert_hidden(&outs, "Param-pw-71");
}

#[test]
fn a_malformed_configuration_line_or_url_is_not_printed_with_its_password() {
    let db = TestDb::new();
    // An unterminated string: the parse error quotes the line.
    let cfg = db.config("[source]\nurl = \"mysql://root:Toml-pw-72@127.0.0.1:3306/test\n");
    let outs = run_both_formats(&db, &["--config", cfg.to_str().unwrap(), "status"], &[]);
    for (code, all) in &outs {
        assert_eq!(*code, Some(2), "{all}");
        assert!(all.contains("line 2"), "the error still says where: {all}");
    }
    assert_hidden(&outs, "Toml-pw-72");
    // Not a URL at all.
    let outs = run_both_formats(
        &db,
        &["--source", "mysql:root:Url-pw-73@host/db", "status"],
        &[],
    );
    for (code, all) in &outs {
        assert_eq!(*code, Some(2), "{all}");
        assert!(all.contains("source.url"), "the error names the key: {all}");
    }
    assert_hidden(&outs, "Url-pw-73");
}

/// A MariaDB user with a password, allowed to read this test's database; dropped at the end.
struct User<'a> {
    db: &'a TestDb,
    name: String,
}

impl<'a> User<'a> {
    fn new(db: &'a TestDb, password: &str) -> User<'a> {
        let name = format!("u{}", &db.name[db.name.len() - 12..]);
        db.mysql(&format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
             CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'; \
             GRANT SELECT ON `{db}`.* TO '{name}'@'%'; \
             GRANT SELECT ON `{db}`.* TO '{name}'@'localhost'",
            db = db.name
        ));
        User { db, name }
    }

    fn url(&self, password: Option<&str>) -> String {
        let pw = password.map(|p| format!(":{p}")).unwrap_or_default();
        let server = common::mysql_server();
        let host = server.rsplit_once('@').map_or("127.0.0.1:3306", |(_, h)| h);
        format!("mysql://{}{pw}@{host}/{}", self.name, self.db.name)
    }
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        self.db.mysql(&format!(
            "DROP USER IF EXISTS '{0}'@'%'; DROP USER IF EXISTS '{0}'@'localhost'",
            self.name
        ));
    }
}

#[test]
fn passwords_in_urls_files_and_the_environment_connect_and_are_never_printed() {
    let db = TestDb::new();
    const PW: &str = "Real-pw-74/x@y";
    db.mysql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v VARCHAR(10)); \
         INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    );
    let user = User::new(&db, PW);
    let cfg_text = "[[tables]]\nname = \"t\"\ncursor = \"id\"\n";
    let cfg = db.config(cfg_text);
    let cfg = cfg.to_str().unwrap();
    let copied = |outs: &[(Option<i32>, String)]| {
        for (code, all) in outs {
            assert_eq!(*code, Some(0), "{all}");
        }
        assert_eq!(db.pg_i64("SELECT count(*) FROM public.t"), 3);
        db.pg("DROP TABLE public.t; DELETE FROM sluice.replication_state");
    };
    // In the URL, percent-encoded, at trace level.
    let encoded = PW.replace('/', "%2F").replace('@', "%40");
    let url = user.url(Some(&encoded));
    let outs = run_both_formats(
        &db,
        &["--config", cfg, "--source", &url, "run", "--once"],
        &[],
    );
    copied(&outs);
    assert_hidden(&outs, PW);
    assert_hidden(&outs, &encoded);
    // In the environment, the URL without it.
    let bare = user.url(None);
    let outs = run_both_formats(
        &db,
        &["--config", cfg, "--source", &bare, "run", "--once"],
        &[("SLUICE_SOURCE_PASSWORD", PW)],
    );
    copied(&outs);
    assert_hidden(&outs, PW);
    // In a file: the environment names it, or the configuration does.
    let file = db.config(&format!("{PW}\n"));
    let file = file.to_str().unwrap();
    let outs = run_both_formats(
        &db,
        &["--config", cfg, "--source", &bare, "run", "--once"],
        &[("SLUICE_SOURCE_PASSWORD_FILE", file)],
    );
    copied(&outs);
    assert_hidden(&outs, PW);
    let cfg2 = db.config(&format!("[source]\npassword_file = \"{file}\"\n{cfg_text}"));
    let outs = run_both_formats(
        &db,
        &[
            "--config",
            cfg2.to_str().unwrap(),
            "--source",
            &bare,
            "run",
            "--once",
        ],
        &[],
    );
    copied(&outs);
    assert_hidden(&outs, PW);
    // Given twice: refused, naming both, showing neither.
    let outs = run_both_formats(
        &db,
        &[
            "--config",
            cfg2.to_str().unwrap(),
            "--source",
            &url,
            "run",
            "--once",
        ],
        &[],
    );
    for (code, all) in &outs {
        assert_eq!(*code, Some(2), "{all}");
        assert!(
            all.contains("given twice") && all.contains("password_file"),
            "{all}"
        );
    }
    assert_hidden(&outs, PW);
    // A wrong password fails, naming the user, not the password.
    let cfg3 = db.config(&format!("[retry]\nconnect_timeout_ms = 300\n{cfg_text}"));
    let outs = run_both_formats(
        &db,
        &[
            "--config",
            cfg3.to_str().unwrap(),
            "--source",
            &bare,
            "run",
            "--once",
        ],
        &[("SLUICE_SOURCE_PASSWORD", "Wrong-pw-75")],
    );
    for (code, all) in &outs {
        assert_ne!(*code, Some(0), "{all}");
        assert!(all.contains(&user.name), "{all}");
    }
    assert_hidden(&outs, "Wrong-pw-75");
    // The target's password too (the server trusts local connections, so any works).
    let target = format!(
        "{}?password=Pg-pw-76",
        db.target_url.replacen("postgres@", "postgres:Pg-pw-77@", 1)
    );
    let outs = run_both_formats(
        &db,
        &[
            "--config", cfg, "--source", &url, "--target", &target, "run", "--once",
        ],
        &[],
    );
    copied(&outs);
    assert_hidden(&outs, "Pg-pw-76");
    assert_hidden(&outs, "Pg-pw-77");
}
