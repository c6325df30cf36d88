//! The page itself: plain HTML with inline CSS. Every string that came from outside wharf
//! (repository and tag names, plugin reasons, upstream error messages) goes through `esc`, so a
//! name like `<script>` is shown, never run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::chart;
use super::escape::esc;
use super::page::{Audience, Page};
use crate::push::DeliveryStatus;
use wharf_model::units::human_bytes;
use wharf_policy::denials::DENIALS_KEPT;
use wharf_storage::images::Image;

/// How often the browser reloads the page on its own (a meta refresh: no script).
pub const REFRESH_SECS: u64 = 30;

/// `42 s`, `5 min`, `3 h`, `2 days`, as the command line writes them too.
use crate::status::duration;

fn ago(now: u64, t: u64) -> String {
    if t > now {
        format!("in {}", duration(t - now))
    } else {
        crate::status::ago(now, t)
    }
}

fn utc(t: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(t))
}

/// A `<time>` showing how long ago `t` was, with the date as its tooltip.
fn when(now: u64, t: u64) -> String {
    format!(
        "<time datetime=\"{t}\" title=\"{}\">{}</time>",
        esc(&utc(t)),
        esc(&ago(now, t))
    )
}

/// The registry a cached repository came from: the first path component when it names a host
/// (Docker's rule), as the mirror names its cache repositories `<upstream host>/<repository>`.
/// `None`: pushed here.
pub fn upstream_of(repository: &str) -> Option<&str> {
    wharf_model::reference::split_registry_host(repository).map(|(host, _)| host)
}

fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

const CSS: &str = "
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--muted:#5d6670;--line:#d8dde3;--card:#f5f7f9;
--accent:#1769aa;--warn:#a15c00;--bad:#b3261e;--ok:#2e7d32}
@media (prefers-color-scheme:dark){:root{--bg:#111417;--fg:#e6e9ec;--muted:#9aa4ae;--line:#2e353c;
--card:#1a1f24;--accent:#6cb0ef;--warn:#f0a850;--bad:#f2867d;--ok:#81c784}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:72rem;padding:.75rem;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;
background:var(--bg);color:var(--fg)}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.4rem 0 .5rem;border-bottom:1px solid var(--line);
padding-bottom:.2rem}h3{font-size:1rem;margin:1rem 0 .3rem}h4{font-size:.95rem;margin:.7rem 0 .2rem;word-break:break-all}
.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:.5rem;margin:.6rem 0}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem .7rem}
.tile b{display:block;font-size:1.3rem}.tile span{color:var(--muted);font-size:.85rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:.8rem}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem}
figcaption{font-weight:600;margin-bottom:.2rem}
svg.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:var(--line);stroke-width:1}.chart .axis{fill:var(--muted);font-size:16px}
.chart .line{fill:none;stroke:var(--accent);stroke-width:2.5;stroke-linejoin:round}
.chart .area{fill:var(--accent);opacity:.15}.chart .dot{fill:var(--accent)}
table{border-collapse:collapse;width:100%;margin:.2rem 0 .6rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.85rem;color:var(--muted);font-weight:600}
.chip{display:inline-block;border:1px solid var(--line);border-radius:1rem;padding:0 .45rem;margin:.05rem .1rem;
font-size:.82rem;white-space:nowrap}
.chip.absent{color:var(--muted);border-style:dashed}
.state-pending,.state-delivering{color:var(--warn);font-weight:600}.state-failed{color:var(--bad);font-weight:600}
.error{color:var(--bad)}
table.pushes{table-layout:fixed}.pushes td{overflow-wrap:anywhere}.pushes code{word-break:normal}
.pushes col.state{width:6.5rem}.pushes col.image{width:22%}.pushes col.to{width:18%}
.pushes col.attempts{width:5rem}.pushes col.next{width:7rem}
details summary{cursor:pointer}details p{margin:.3rem 0 0;white-space:pre-wrap}
@media (max-width:640px){body{padding:.5rem}table,thead,tbody,tr,td{display:block}thead,colgroup{display:none}
tr{border:1px solid var(--line);border-radius:8px;margin:.45rem 0;padding:.35rem .55rem;background:var(--card)}
td{border:none;padding:.12rem 0}td::before{content:attr(data-label) ': ';font-weight:600;color:var(--muted)}}
";

/// The whole document.
pub fn render(page: &Page) -> String {
    let mut s = String::with_capacity(16 * 1024);
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>wharf status</title><style>{CSS}</style></head><body>\
         <header><h1>wharf status</h1><p class=\"muted\">{} · reloads every {REFRESH_SECS} s</p>{}</header>",
        esc(&utc(page.now)),
        audience(&page.audience)
    );
    tiles(&mut s, page);
    history(&mut s, page);
    images(&mut s, page);
    pushes(&mut s, page);
    denials(&mut s, page);
    s.push_str("</body></html>\n");
    s
}

/// Whom the lists are for, when `[auth]` decides; an anonymous caller is offered to log in (the
/// browser asks for the registry's credentials on `/ui?login`, and sends them with every reload).
fn audience(a: &Audience) -> String {
    match a {
        Audience::Everyone => String::new(),
        Audience::Anonymous => "<p id=\"audience\">Showing the repositories anonymous callers may \
             pull. <a href=\"/ui?login\">Log in</a> to see the ones you may pull.</p>"
            .into(),
        Audience::Identity(id) => format!(
            "<p id=\"audience\">Signed in as <b>{id}</b>: showing the repositories {id} may pull.</p>",
            id = esc(id)
        ),
    }
}

fn tile(s: &mut String, id: &str, value: &str, what: &str) {
    let _ = write!(
        s,
        "<div class=\"tile\" id=\"tile-{id}\"><b>{}</b><span>{}</span></div>",
        esc(value),
        esc(what)
    );
}

fn tiles(s: &mut String, page: &Page) {
    s.push_str("<section class=\"tiles\">");
    let totals = page.samples.last().map(|x| x.totals).unwrap_or_default();
    let requests = totals.hits + totals.misses;
    let ratio = if requests == 0 {
        "–".to_owned()
    } else {
        format!("{:.0} %", totals.hits as f64 * 100.0 / requests as f64)
    };
    tile(s, "hit-ratio", &ratio, "cache hit ratio");
    tile(
        s,
        "saved",
        &human_bytes(totals.bytes_from_cache),
        "served from cache",
    );
    if let Ok(list) = &page.images {
        tile(s, "images", &list.len().to_string(), "tagged images");
    }
    if let Ok(list) = &page.pushes {
        let count = |states: &[&str]| {
            list.iter()
                .filter(|p| states.contains(&serde_name(&p.state).as_str()))
                .count()
        };
        tile(
            s,
            "pending",
            &count(&["pending", "delivering"]).to_string(),
            "pushes waiting",
        );
        tile(
            s,
            "failed",
            &count(&["failed"]).to_string(),
            "pushes failed",
        );
    }
    tile(
        s,
        "denials",
        &page.denials.len().to_string(),
        "recent plugin denials",
    );
    s.push_str("</section>");
}

fn history(s: &mut String, page: &Page) {
    s.push_str("<section id=\"history\"><h2>Cache over time</h2>");
    if page.samples.len() < 2 {
        let _ = write!(
            s,
            "<p class=\"empty\">No history yet: a sample is taken every {}.</p></section>",
            duration(page.sample_every.as_secs())
        );
        return;
    }
    let ratio = chart::hit_ratio(&page.samples);
    let saved = chart::bytes_saved(&page.samples);
    s.push_str("<div class=\"charts\">");
    let _ = write!(
        s,
        "<figure id=\"chart-hit-ratio\"><figcaption>Hit ratio</figcaption>{}\
         <p class=\"muted\">mirror requests served from the cache, between samples: every {} in \
         the last {}, one per {} before</p></figure>",
        chart::svg("Cache hit ratio (%)", &ratio, 100.0, |v| format!(
            "{v:.0} %"
        )),
        duration(page.sample_every.as_secs()),
        duration(page.keep.fine_secs),
        duration(page.keep.coarse_secs),
    );
    let _ = write!(
        s,
        "<figure id=\"chart-bytes-saved\"><figcaption>Bytes saved</figcaption>{}\
         <p class=\"muted\">served from the cache instead of an upstream</p></figure>",
        chart::svg("Bytes served from the cache", &saved, 0.0, |v| human_bytes(
            v as u64
        )),
    );
    s.push_str("</div>");
    if let Some(last) = page.samples.last() {
        let _ = write!(
            s,
            "<p class=\"muted\" id=\"counted-since\">Counted since {}, across restarts; the \
             history keeps {}.</p>",
            when(page.now, last.since),
            duration(page.keep.keep_secs)
        );
    }
    s.push_str("</section>");
}

fn images(s: &mut String, page: &Page) {
    s.push_str("<section id=\"images\"><h2>Cached images</h2>");
    let list = match &page.images {
        Ok(l) => l,
        Err(e) => {
            let _ = write!(
                s,
                "<p class=\"error\">Cannot list images: {}</p></section>",
                esc(e)
            );
            return;
        }
    };
    if list.is_empty() {
        s.push_str(
            "<p class=\"empty\">Nothing cached yet: images appear here once pulled through the \
             mirror or pushed.</p></section>",
        );
        return;
    }
    // Upstreams by name, then what was pushed here; repositories by name within each.
    let mut groups: BTreeMap<(bool, &str), BTreeMap<&str, Vec<&Image>>> = BTreeMap::new();
    for img in list {
        let key = match upstream_of(&img.repository) {
            Some(host) => (false, host),
            None => (true, ""),
        };
        groups
            .entry(key)
            .or_default()
            .entry(img.repository.as_str())
            .or_default()
            .push(img);
    }
    for ((local, host), repos) in groups {
        if local {
            s.push_str("<h3>Pushed here</h3>");
        } else {
            let _ = write!(s, "<h3>From {}</h3>", esc(host));
        }
        for (repo, imgs) in repos {
            let shown = if local { repo } else { &repo[host.len() + 1..] };
            let _ = write!(
                s,
                "<h4 title=\"{}\">{}</h4><table><thead><tr><th>Tag</th><th>Platforms kept</th>\
                 <th>Size</th><th>Last use</th><th>Digest</th></tr></thead><tbody>",
                esc(repo),
                esc(shown)
            );
            for img in imgs {
                image_row(s, page.now, img);
            }
            s.push_str("</tbody></table>");
        }
    }
    s.push_str("</section>");
}

fn image_row(s: &mut String, now: u64, img: &Image) {
    let mut platforms: String = img
        .platforms
        .iter()
        .map(|p| format!("<span class=\"chip\">{}</span>", esc(p)))
        .collect();
    if img.platforms_absent > 0 {
        let _ = write!(
            platforms,
            "<span class=\"chip absent\" title=\"left out by the platform policy, or not pulled yet\">\
             +{} not kept</span>",
            img.platforms_absent
        );
    }
    if platforms.is_empty() {
        platforms = "<span class=\"muted\">–</span>".into();
    }
    let provenance: String = img
        .provenance
        .iter()
        .map(|p| format!("<br><small class=\"muted\">{}</small>", esc(p)))
        .collect();
    let last = match img.last_used {
        Some(t) => when(now, t),
        None => "<span class=\"muted\">–</span>".into(),
    };
    let _ = write!(
        s,
        "<tr><td data-label=\"Tag\"><b>{}</b>{provenance}</td><td data-label=\"Platforms\">{platforms}</td>\
         <td data-label=\"Size\">{}</td><td data-label=\"Last use\">{last}</td>\
         <td data-label=\"Digest\"><code title=\"{}\">{}</code></td></tr>",
        esc(img.tag.as_deref().unwrap_or("<none>")),
        esc(&human_bytes(img.size)),
        esc(&img.digest.to_string()),
        esc(&img.digest.hex()[..12.min(img.digest.hex().len())]),
    );
}

fn pushes(s: &mut String, page: &Page) {
    s.push_str("<section id=\"pushes\"><h2>Pushes waiting or failed</h2>");
    let list = match &page.pushes {
        Ok(l) => l,
        Err(e) => {
            let _ = write!(
                s,
                "<p class=\"error\">Cannot read the push journal: {}</p></section>",
                esc(e)
            );
            return;
        }
    };
    let open: Vec<&DeliveryStatus> = list
        .iter()
        .filter(|p| serde_name(&p.state) != "delivered")
        .collect();
    let delivered = list.len() - open.len();
    if open.is_empty() {
        s.push_str("<p class=\"empty\">No push is waiting or failed.</p>");
    } else {
        // Fixed column widths: an upstream's error can be a long unbroken URL, which would
        // otherwise take the width from the names (one character a line) and run off the page.
        s.push_str(
            "<table class=\"pushes\"><colgroup><col class=\"state\"><col class=\"image\">\
             <col class=\"to\"><col class=\"attempts\"><col class=\"error\"><col class=\"next\">\
             </colgroup><thead><tr><th>State</th><th>Image</th><th>To</th><th>Attempts</th>\
             <th>Last error</th><th>Next try</th></tr></thead><tbody>",
        );
        for p in open {
            let state = serde_name(&p.state);
            let next = match p.next_try {
                Some(t) if state != "failed" => when(page.now, t),
                _ => "<span class=\"muted\">–</span>".into(),
            };
            let _ = write!(
                s,
                "<tr><td data-label=\"State\" class=\"state-{st}\">{st}</td>\
                 <td data-label=\"Image\"><code>{}:{}</code><br><small class=\"muted\">{} · pushed {}</small></td>\
                 <td data-label=\"To\"><code>{}/{}</code></td><td data-label=\"Attempts\">{}</td>\
                 <td data-label=\"Last error\">{}</td><td data-label=\"Next try\">{next}</td></tr>",
                esc(&p.repository),
                esc(&p.reference),
                esc(&serde_name(&p.mode)),
                when(page.now, p.created),
                esc(p.target.trim_end_matches('/')),
                esc(&p.upstream_repository),
                p.attempts,
                last_error(p.last_error.as_deref()),
                st = esc(&state),
            );
        }
        s.push_str("</tbody></table>");
    }
    if delivered > 0 {
        let _ = write!(
            s,
            "<p class=\"muted\">{delivered} delivered push{} in the journal.</p>",
            if delivered == 1 { "" } else { "es" }
        );
    }
    s.push_str("</section>");
}

/// An upstream's error is shown up to this many characters; the rest opens in a `<details>`.
const ERROR_CHARS: usize = 120;

/// A push's last error: short ones as they are, long ones clipped, the whole text a click away (no
/// script: a `<details>`), and on hover.
fn last_error(e: Option<&str>) -> String {
    let Some(e) = e else {
        return "–".into();
    };
    match e.char_indices().nth(ERROR_CHARS) {
        None => esc(e),
        Some((i, _)) => format!(
            "<details><summary title=\"{full}\">{}…</summary><p>{full}</p></details>",
            esc(&e[..i]),
            full = esc(e)
        ),
    }
}

fn denials(s: &mut String, page: &Page) {
    s.push_str(&format!(
        "<section id=\"denials\"><h2>Recent plugin denials <small class=\"muted\">(the last {})</small></h2>",
        DENIALS_KEPT
    ));
    if page.denials.is_empty() {
        s.push_str("<p class=\"empty\">No request was denied by a plugin lately.</p></section>");
        return;
    }
    s.push_str(
        "<table><thead><tr><th>When</th><th>Plugin</th><th>Request</th><th>Reason</th></tr></thead><tbody>",
    );
    for d in page.denials.iter().rev() {
        let _ = write!(
            s,
            "<tr><td data-label=\"When\">{}</td><td data-label=\"Plugin\">{}</td>\
             <td data-label=\"Request\"><code>{}</code></td><td data-label=\"Reason\">{}</td></tr>",
            when(page.now, d.at),
            esc(&d.plugin),
            esc(&d.request),
            esc(&d.reason)
        );
    }
    s.push_str("</tbody></table></section>");
}
