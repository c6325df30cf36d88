//! The status page, `/ui` on the metrics listener: what the cache holds (by upstream and repository,
//! with the platforms kept, sizes and last use), the cache hit ratio and bytes saved over time,
//! pushes waiting or failed, and the requests plugins denied lately.
//!
//! Read-only and rendered on the server: plain HTML, inline CSS and SVG, no script and nothing fetched
//! from anywhere else (the `Content-Security-Policy` says so to the browser), so it works on an
//! air-gapped network and needs no build step. It reads the same state `wharf images` and `wharf push
//! status` show, through `Admin`.
//!
//! The history and the denials live in memory, one ring each per process (statics: they are fed
//! from places that hold no handle to the server, by one line each), so they start empty on a
//! restart and never grow past their capacity.

mod chart;
mod html;
mod ring;
#[cfg(test)]
mod tests;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Response, StatusCode, Uri};
use http_body_util::Full;

use crate::admin::Admin;
pub use html::{Page, REFRESH_SECS};
pub use ring::{CacheTotals, Denial, Ring, Sample};

/// How often the sampler records the cache counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: an hour's worth at `SAMPLE_EVERY`.
pub const SAMPLES_KEPT: usize = 360;
/// Denials kept.
pub const DENIALS_KEPT: usize = 50;
/// A plugin's reason is shown up to this many characters (a plugin may say a lot).
const REASON_CHARS: usize = 400;

static HISTORY: Mutex<Ring<Sample>> = Mutex::new(Ring::new(SAMPLES_KEPT));
static DENIALS: Mutex<Ring<Denial>> = Mutex::new(Ring::new(DENIALS_KEPT));

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A poisoned lock only means a panic elsewhere mid-push; the ring is still a ring.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cache counters now (the metrics module's, cumulative since start).
fn totals() -> CacheTotals {
    crate::metrics::cache_totals()
}

/// Records a plugin's denial for the page (called where `Policy::allow` logs it).
pub fn denied(plugin: &str, request: &str, reason: &str) {
    let clip = |s: &str| match s.char_indices().nth(REASON_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    };
    lock(&DENIALS).push(Denial {
        at: now(),
        plugin: clip(plugin),
        request: clip(request),
        reason: clip(reason),
    });
}

/// Samples the cache counters every `every`, from now on (the first at once), until aborted.
pub async fn sampler(every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lock(&HISTORY).push(Sample {
            at: now(),
            totals: totals(),
        });
    }
}

/// Answers a request for `/ui` or anything under it: the page for `GET`/`HEAD /ui` (or `/ui/`), a
/// short 404 or 405 page otherwise.
pub async fn serve(admin: &Admin, method: &Method, uri: &Uri) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = page_response(
            StatusCode::METHOD_NOT_ALLOWED,
            notice("The status page is read-only: only GET and HEAD are served."),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !matches!(uri.path(), "/ui" | "/ui/") {
        return page_response(
            StatusCode::NOT_FOUND,
            notice("No such page: the status page is at /ui."),
        );
    }
    let page = gather(admin).await;
    page_response(StatusCode::OK, html::render(&page))
}

/// What the page shows, read now.
pub async fn gather(admin: &Admin) -> Page {
    let images = crate::images::list(&admin.collector, false)
        .await
        .map_err(|e| e.to_string());
    let pushes = admin.push.status().await.map_err(|e| e.message);
    let now = now();
    let mut samples = lock(&HISTORY).to_vec();
    // The page always ends at this moment, however long ago the last sample was taken.
    if samples.last().is_none_or(|s| s.at < now) {
        samples.push(Sample {
            at: now,
            totals: totals(),
        });
    }
    Page {
        now,
        images,
        pushes,
        samples,
        denials: lock(&DENIALS).to_vec(),
        sample_every: SAMPLE_EVERY,
    }
}

fn notice(text: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wharf status</title></head><body><p>{}</p><p><a href=\"/ui\">Status page</a></p></body></html>\n",
        html::esc(text)
    )
}

fn page_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        // Names on the page come from clients: even if one slipped past the escaping, the browser
        // runs no script, loads nothing and sends nothing from this page.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; \
             frame-ancestors 'none'; base-uri 'none'",
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
