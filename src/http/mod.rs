//! The HTTP surface of `run` and `demo` (actix-web), on `[http] addr` / `SLUICE_HTTP_ADDR`
//! (default 127.0.0.1:9731):
//!
//! - `GET /metrics`: Prometheus text format ([`crate::telemetry`]).
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when both databases answer `SELECT 1` within 2 s and every table's
//!   pipeline is running; 503 otherwise. The JSON body says which check failed.
//! - `GET /status`: what `sluice status --json` prints, with what this process knows live
//!   ([`page::live`]: each table's state and lag over the last minutes, the process); 503
//!   with `{"error": …}` when the target cannot be read.
//! - `GET /`: the status page ([`page`]), which reads `/status`.
//!
//! `/readyz` and `/status` answer from a copy at most [`CACHE_FOR`] old, and ask the
//! databases through the process's helper connections ([`crate::conn`]): probing them
//! often costs the servers nothing more.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use sea_orm::sqlx;
use tracing::info;

use crate::config::Settings;
use crate::conn::SharedHelpers;
use crate::error::{Error, Result};
use crate::redact::redact;

mod page;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an answer of `/readyz` or `/status` is served again before the databases are
/// asked anew.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

struct State {
    settings: Settings,
    helpers: SharedHelpers,
    readyz: Cached,
    status: Cached,
}

/// The last answer of an endpoint and when it was made.
#[derive(Default)]
struct Cached(tokio::sync::Mutex<Option<(Instant, bool, serde_json::Value)>>);

impl Cached {
    /// The answer at most [`CACHE_FOR`] old, or a new one from `make` (`ok`, body). One
    /// request at a time makes it; the others wait and share it.
    async fn get<F, Fut>(&self, make: F) -> HttpResponse
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = (bool, serde_json::Value)>,
    {
        let mut last = self.0.lock().await;
        let (ok, body) = match &*last {
            Some((at, ok, body)) if at.elapsed() < CACHE_FOR => (*ok, body.clone()),
            _ => {
                let (ok, body) = make().await;
                *last = Some((Instant::now(), ok, body.clone()));
                (ok, body)
            }
        };
        // Error texts carry what the servers said: masked as every printed line is.
        let body = crate::redact::redact_text(&body.to_string());
        let mut response = if ok {
            HttpResponse::Ok()
        } else {
            HttpResponse::ServiceUnavailable()
        };
        response
            .content_type("application/json")
            .insert_header(("Cache-Control", "no-store"))
            .body(body)
    }
}

/// Binds and starts serving on the current actix System; returns the bound address.
/// The server stops with the System.
pub fn start(settings: &Settings, helpers: SharedHelpers) -> Result<SocketAddr> {
    let state = web::Data::new(State {
        settings: settings.clone(),
        helpers,
        readyz: Cached::default(),
        status: Cached::default(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/status", web::get().to(status))
            .route("/", web::get().to(page::index))
            .route(page::SCRIPT_PATH, web::get().to(page::script))
            .route(page::STYLE_PATH, web::get().to(page::style))
            .route(page::ICON_PATH, web::get().to(page::icon))
    })
    .workers(1)
    // sluice handles SIGINT/SIGTERM itself (finish the batches in flight, then exit).
    .disable_signals()
    .shutdown_timeout(1)
    .bind(settings.http.addr.as_str())
    .map_err(|e| {
        Error::Config(format!(
            "cannot serve HTTP on {}: {e}; choose another address with [http] addr or SLUICE_HTTP_ADDR",
            settings.http.addr
        ))
    })?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| Error::Other("the HTTP server bound no address".into()))?;
    actix_rt::spawn(server.run());
    actix_rt::spawn(page::sample_lag());
    info!(%addr, "serving the status page (http://{addr}/) and /metrics /healthz /readyz /status");
    Ok(addr)
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::render(chrono::Utc::now()))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `"ok"` or why not.
async fn probe<F, Fut>(f: F) -> String
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    match tokio::time::timeout(PROBE_TIMEOUT, f()).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
    }
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    state
        .readyz
        .get(|| ready(&state.settings, &state.helpers))
        .await
}

async fn ready(s: &Settings, helpers: &SharedHelpers) -> (bool, serde_json::Value) {
    let mut helpers = helpers.lock().await;
    let (my, pg) = helpers.both(&s.source.url, &s.target.url).await;
    let (source, target) = tokio::join!(
        probe(|| async {
            sqlx::query("SELECT 1")
                .execute(my?)
                .await
                .map_err(|e| Error::db(crate::error::Side::Source, "SELECT 1", &e))?;
            Ok(())
        }),
        probe(|| async {
            sqlx::query("SELECT 1")
                .execute(pg?)
                .await
                .map_err(|e| Error::db(crate::error::Side::Target, "SELECT 1", &e))?;
            Ok(())
        }),
    );
    if source != "ok" || target != "ok" {
        // A connection cut mid-probe is not used again.
        helpers.reset();
    }
    drop(helpers);
    let tables = crate::telemetry::snapshot();
    let table_states: serde_json::Map<String, serde_json::Value> = tables
        .iter()
        .map(|(t, m)| {
            let st = if let Some(e) = &m.failed {
                format!("failed: {e}")
            } else if m.running {
                "running".into()
            } else {
                "stopped".into()
            };
            (t.clone(), st.into())
        })
        .collect();
    // Tables whose last background verify found rows that differ and were not repaired:
    // the process is working (ready is not affected), but the copy is not equal.
    let drift: serde_json::Map<String, serde_json::Value> = tables
        .iter()
        .filter_map(|(t, m)| {
            let r = m.verify.as_ref().filter(|r| !r.ok())?;
            Some((t.clone(), crate::verify::check::summary(r).into()))
        })
        .collect();
    // A member standing by (its group's other members hold every table) is ready: it is
    // healthy, and takes tables over when a member stops.
    let standby = crate::telemetry::standby() && tables.is_empty();
    let ready = source == "ok"
        && target == "ok"
        && (standby
            || (!tables.is_empty() && tables.values().all(|m| m.running && m.failed.is_none())));
    let body = serde_json::json!({
        "ready": ready,
        "source": source.replace(&s.source.url, &redact(&s.source.url)),
        "target": target.replace(&s.target.url, &redact(&s.target.url)),
        "tables": table_states,
        "drift": drift,
        "member": crate::state::ownership::owner_id(),
        "role": if standby { "standby" } else { "active" },
    });
    (ready, body)
}

async fn status(state: web::Data<State>) -> HttpResponse {
    state
        .status
        .get(|| async {
            let mut helpers = state.helpers.lock().await;
            match crate::status::collect(&state.settings, &mut helpers).await {
                Ok(s) => (true, page::live(&state.settings, s)),
                Err(e) => {
                    helpers.reset();
                    (false, page::unreadable(&state.settings, &e))
                }
            }
        })
        .await
}
