//! The status page, `/ui` on the metrics listener: what the cache holds (by upstream and repository,
//! with the platforms kept, sizes and last use), the cache hit ratio and bytes saved over time,
//! pushes waiting or failed, and the requests plugins denied lately.
//!
//! Read-only and rendered on the server: plain HTML, inline CSS and SVG, no script and nothing fetched
//! from anywhere else (the `Content-Security-Policy` says so to the browser), so it works on an
//! air-gapped network and needs no build step. It reads the same state `wharf images` and `wharf push
//! status` show, through `Admin`.
//!
//! The history is in the metadata (`meta::Sample`, thinned to a week there): the sampler records the
//! cache counters every `[metrics] sample_secs`, counting on from the last sample of the previous run,
//! so the chart, the hit ratio and the bytes saved carry over a restart (Prometheus' counters reset
//! as counters do: only this view adds the recorded base). The denials are the policy's
//! (`wharf_policy::denials`), which the sampler writes to the metadata when they changed; the server
//! puts them back after a restart. Both live in one `History` per server (held by `Admin`), not in
//! process-wide statics, so the server and an offline command each see their own.

mod chart;
mod html;
#[cfg(test)]
mod tests;
mod viewer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::admin::Admin;
pub use html::{Page, REFRESH_SECS};
pub use viewer::{Audience, Viewer};
use wharf_policy::denials::Denials;
use wharf_protocol::error::ErrorCode;
pub use wharf_storage::meta::{CacheTotals, Sample};
use wharf_storage::meta::{Meta, MetaError, Retention};

/// How often the sampler records the cache counters unless `[metrics] sample_secs` says otherwise.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The status page's memory in one process: where the sampler's count began (once it has read
/// where the previous run left the totals) and the policy's recent denials.
#[derive(Debug, Default)]
pub struct History {
    sampling: Mutex<Option<Sampling>>,
    denials: Arc<Denials>,
}

#[derive(Debug, Clone, Copy)]
struct Sampling {
    /// The totals before this process counted anything.
    base: Sample,
    every: Duration,
}

use wharf_model::clock::unix_now as now;

/// A poisoned lock only means a panic elsewhere mid-push; the ring is still a ring.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cache counters of this process (the metrics module's, cumulative since start).
fn counters() -> CacheTotals {
    let s = wharf_metrics::cache_counts();
    CacheTotals {
        hits: s.blob_hits + s.manifest_hits,
        misses: s.blob_misses + s.manifest_misses,
        bytes_from_cache: s.bytes_from_cache,
        bytes_from_upstream: s.bytes_from_upstream,
    }
}

/// The totals `base` (the previous runs') and this process's `counters` make at `at`.
pub fn continued(base: Option<Sample>, counters: CacheTotals, at: u64) -> Sample {
    match base {
        Some(b) => Sample {
            at,
            since: b.since,
            totals: b.totals.plus(counters),
        },
        None => Sample {
            at,
            since: at,
            totals: counters,
        },
    }
}

impl History {
    /// A server's history: the denials are its policy's.
    pub fn new(denials: Arc<Denials>) -> History {
        History {
            sampling: Mutex::new(None),
            denials,
        }
    }

    pub fn denials(&self) -> &Denials {
        &self.denials
    }

    /// The cache totals now, counted across restarts (`None`: nothing counted yet, ever). In the
    /// server, its sampler's base; elsewhere (the CLI with no server) the last recorded sample, as
    /// this process counted nothing.
    pub async fn current(&self, meta: &Meta) -> Result<Option<Sample>, MetaError> {
        let sampling = *lock(&self.sampling);
        let base = match sampling {
            Some(s) => Some(s.base),
            None => meta.last_sample().await?,
        };
        let counters = counters();
        Ok((base.is_some() || counters != CacheTotals::default())
            .then(|| continued(base, counters, now())))
    }

    /// How often the sampler records (its setting once it runs).
    fn every(&self) -> Duration {
        lock(&self.sampling).map_or(SAMPLE_EVERY, |s| s.every)
    }
}

/// Writes samples of the cache totals to `meta`, counting on from the last one recorded. While the
/// totals stand still nothing is written (an idle wharf does not write every interval); the last
/// unchanged sample is written just before the next change, so the chart stays flat until then
/// instead of sloping across the idle time.
pub struct Sampler {
    meta: Meta,
    base: Sample,
    keep: Retention,
    thinned_to: u64,
    /// The totals of the last sample written by this process.
    written: Option<CacheTotals>,
    /// The newest sample not written because nothing had changed.
    held: Option<Sample>,
}

impl Sampler {
    /// Reads the base: the newest sample recorded (by a previous run); with none, the totals count
    /// from zero from `now` on.
    pub async fn start(meta: Meta, keep: Retention, now: u64) -> Result<Sampler, MetaError> {
        let base = meta.last_sample().await?.unwrap_or(Sample {
            at: now,
            since: now,
            totals: CacheTotals::default(),
        });
        Ok(Sampler {
            meta,
            base,
            keep,
            thinned_to: 0,
            written: None,
            held: None,
        })
    }

    /// Records the base plus `counters` at `at`, unless nothing changed since the last sample written
    /// (`None` then); `durable` writes it in any case, forced to disk (at a stop).
    pub async fn record(
        &mut self,
        counters: CacheTotals,
        at: u64,
        durable: bool,
    ) -> Result<Option<Sample>, MetaError> {
        let s = continued(Some(self.base), counters, at);
        if self.written == Some(s.totals) {
            if !durable {
                self.held = Some(s);
                return Ok(None);
            }
        } else if let Some(h) = self.held.take() {
            self.write(h, false).await?;
        }
        self.held = None;
        self.write(s, durable).await?;
        Ok(Some(s))
    }

    async fn write(&mut self, s: Sample, durable: bool) -> Result<(), MetaError> {
        self.thinned_to = self
            .meta
            .record_sample(s, self.keep, self.thinned_to, durable)
            .await?;
        self.written = Some(s.totals);
        Ok(())
    }
}

/// The server's sampler: every `every` (the first at once) and once more, durably, when a stop is
/// asked for (SIGTERM or SIGINT: the housekeeping tasks are aborted after the server drains, and the
/// counts since the last tick would be lost), until aborted. Off the request path: at most one small
/// write per interval (none while idle), on the blocking pool.
pub async fn sampler(meta: Meta, every: Duration, history: Arc<History>) {
    let every = every.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until the base is read, nothing is recorded: a sample from zero would lose the totals.
    let mut s = loop {
        tick.tick().await;
        match Sampler::start(meta.clone(), Retention::DEFAULT, now()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "status history: cannot read the last sample; trying again")
            }
        }
    };
    *lock(&history.sampling) = Some(Sampling {
        base: s.base,
        every,
    });
    let mut denials_saved = 0;
    let stop = stop_asked();
    tokio::pin!(stop);
    let mut durable = false;
    loop {
        if let Err(e) = s.record(counters(), now(), durable).await {
            tracing::warn!(error = %e, "status history: cannot record the cache counters");
        }
        history.denials.save(&meta, &mut denials_saved).await;
        if durable {
            return;
        }
        durable = tokio::select! {
            _ = tick.tick() => false,
            () = &mut stop => true,
        };
    }
}

/// Resolves when the process is asked to stop (never, if the signals cannot be watched: the server
/// says so itself).
async fn stop_asked() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Answers a request for `/ui` or anything under it from `client`: the page for `GET`/`HEAD /ui` (or
/// `/ui/`) as that caller may see it, `/ui?login` to log in, a short 404 or 405 page otherwise.
pub async fn serve<B>(
    admin: &Admin,
    req: &Request<B>,
    client: Option<IpAddr>,
) -> Response<Full<Bytes>> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut r = page_response(
            StatusCode::METHOD_NOT_ALLOWED,
            notice("The status page is read-only: only GET and HEAD are served."),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !matches!(req.uri().path(), "/ui" | "/ui/") {
        return page_response(
            StatusCode::NOT_FOUND,
            notice("No such page: the status page is at /ui."),
        );
    }
    let viewer = match identify(admin, req, client).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let login = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "login" || p.starts_with("login="))
    });
    if login {
        return match viewer.audience() {
            Audience::Anonymous => log_in("Log in to see the repositories you may pull."),
            // Logged in (or nothing to log in to): the page, at the address its reloads keep.
            _ => Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, "/ui")
                .header(header::CACHE_CONTROL, "no-store")
                .body(Full::new(Bytes::new()))
                .expect("valid response"),
        };
    }
    let page = gather(admin, &viewer).await;
    page_response(StatusCode::OK, html::render(&page))
}

/// Who the caller is, by the registry's credentials (`Basic`, as a browser sends them, or a bearer
/// token of wharf's); a wrong credential is asked for again, as the registry would.
async fn identify<B>(
    admin: &Admin,
    req: &Request<B>,
    client: Option<IpAddr>,
) -> Result<Viewer, Response<Full<Bytes>>> {
    let Some(auth) = admin.registry.as_ref().and_then(|r| r.auth()) else {
        return Ok(Viewer::Anyone);
    };
    match auth.identify(req.headers(), client).await {
        Ok(caller) => Ok(Viewer::Caller {
            auth: auth.clone(),
            identity: caller.identity,
        }),
        Err(e) if e.code == ErrorCode::TooManyRequests => {
            let mut r = page_response(StatusCode::TOO_MANY_REQUESTS, notice(&e.message));
            for (name, value) in e.headers {
                r.headers_mut().insert(name, value);
            }
            Err(r)
        }
        Err(_) => Err(log_in(
            "The user name or password sent is wrong, or the token has expired: log in again.",
        )),
    }
}

/// `401` with a `Basic` challenge: a browser asks for a user name and password, and sends them with
/// every request to this listener from then on.
fn log_in(why: &str) -> Response<Full<Bytes>> {
    let mut r = page_response(
        StatusCode::UNAUTHORIZED,
        notice(&format!(
            "{why} The status page takes the registry's credentials: a user of wharf's htpasswd \
             file, or a token from its tokens file as the password."
        )),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"wharf\", charset=\"UTF-8\""),
    );
    r
}

/// What the page shows `viewer`, read now.
pub async fn gather(admin: &Admin, viewer: &Viewer) -> Page {
    let c = &admin.collector;
    admin.flush_usage().await;
    let images = wharf_storage::images::list(c, false)
        .await
        .map_err(|e| e.to_string());
    let pushes = admin.push.status().await.map_err(|e| e.message);
    let now = now();
    let mut samples = c.meta.samples().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "status page: cannot read the history");
        Vec::new()
    });
    // The page always ends at this moment, however long ago the last sample was taken.
    match admin.history.current(&c.meta).await {
        Ok(Some(s)) if samples.last().is_none_or(|l| l.at < s.at) => samples.push(s),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "status page: cannot read the cache totals"),
    }
    let every = admin.history.every();
    let mut page = Page {
        now,
        images,
        pushes,
        samples,
        denials: admin.history.denials.list(),
        sample_every: every,
        keep: Retention::DEFAULT,
        audience: Audience::Everyone,
    };
    viewer.filter(&mut page);
    page
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
