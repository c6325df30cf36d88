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
mod escape;
mod html;
mod page;
#[cfg(test)]
mod tests;
mod viewer;

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::admin::Admin;
pub use html::REFRESH_SECS;
pub use page::{Audience, Page};
pub use viewer::Viewer;
use wharf_protocol::error::ErrorCode;
use wharf_storage::meta::Retention;
pub use wharf_storage::meta::{CacheTotals, Sample};

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
    let now = wharf_model::clock::unix_now();
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
        denials: admin.history.denials().list(),
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
        escape::esc(text)
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
