//! The history as inline SVG line charts, drawn on the server: the page needs no script and no
//! chart library from elsewhere. A chart scales with the page (`viewBox`, `width: 100%`), so it
//! fits a phone as well as a desktop.

use std::fmt::Write as _;

use super::escape::esc;
use crate::status::duration;
use wharf_storage::meta::Sample;

/// A value per moment (unix seconds); `None` is a gap (nothing to say for that interval).
pub type Points = Vec<(u64, Option<f64>)>;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 96.0;
const RIGHT: f64 = 590.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 172.0;

/// The share of mirror requests served from the cache in each interval between samples, in percent;
/// a gap where no mirror request came in.
pub fn hit_ratio(samples: &[Sample]) -> Points {
    samples
        .windows(2)
        .map(|w| {
            let hits = w[1].totals.hits.saturating_sub(w[0].totals.hits);
            let misses = w[1].totals.misses.saturating_sub(w[0].totals.misses);
            let n = hits + misses;
            (w[1].at, (n > 0).then(|| hits as f64 * 100.0 / n as f64))
        })
        .collect()
}

/// Bytes served from the cache since the oldest sample kept: what the upstreams were spared.
pub fn bytes_saved(samples: &[Sample]) -> Points {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    samples
        .iter()
        .map(|s| {
            let saved = s
                .totals
                .bytes_from_cache
                .saturating_sub(first.totals.bytes_from_cache);
            (s.at, Some(saved as f64))
        })
        .collect()
}

/// A line chart of `points` from 0 to `y_max` (at least the largest value), its axis labelled by
/// `label`. Consecutive values make one line; a lone value between gaps is a dot.
pub fn svg(
    title: &str,
    points: &[(u64, Option<f64>)],
    y_max: f64,
    label: fn(f64) -> String,
) -> String {
    let largest = points
        .iter()
        .filter_map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let y_max = if y_max.is_finite() && y_max > 0.0 {
        y_max.max(largest)
    } else if largest > 0.0 {
        largest
    } else {
        1.0
    };
    let t0 = points.first().map(|p| p.0).unwrap_or(0);
    let t1 = points.last().map(|p| p.0).unwrap_or(0);
    let span = t1.saturating_sub(t0).max(1) as f64;
    // A lone moment is the latest one: drawn at "now", on the right.
    let x = |t: u64| {
        if t1 > t0 {
            LEFT + t.saturating_sub(t0) as f64 / span * (RIGHT - LEFT)
        } else {
            RIGHT
        }
    };
    let y = |v: f64| BOTTOM - v.clamp(0.0, y_max) / y_max * (BOTTOM - TOP);

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{t}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
        t = esc(title)
    );
    for frac in [0.0, 0.5, 1.0] {
        let gy = y(y_max * frac);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{RIGHT}\" y2=\"{gy:.1}\"/>\
             <text class=\"axis\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{v}</text>",
            lx = LEFT - 6.0,
            ty = gy + 5.0,
            v = esc(&label(y_max * frac))
        );
    }
    let _ = write!(
        s,
        "<text class=\"axis\" x=\"{LEFT}\" y=\"{by}\" text-anchor=\"start\">{ago}</text>\
         <text class=\"axis\" x=\"{RIGHT}\" y=\"{by}\" text-anchor=\"end\">now</text>",
        by = HEIGHT - 6.0,
        ago = if t1 > t0 {
            format!("{} ago", duration(t1 - t0))
        } else {
            String::new()
        }
    );
    let mut segment: Vec<(f64, f64)> = Vec::new();
    let flush = |segment: &mut Vec<(f64, f64)>, s: &mut String| {
        match segment.as_slice() {
            [] => {}
            [(px, py)] => {
                let _ = write!(
                    s,
                    "<circle class=\"dot\" cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\"/>"
                );
            }
            many => {
                let coords: Vec<String> = many
                    .iter()
                    .map(|(px, py)| format!("{px:.1},{py:.1}"))
                    .collect();
                let (first_x, last_x) = (many[0].0, many[many.len() - 1].0);
                let _ = write!(
                    s,
                    "<polygon class=\"area\" points=\"{first_x:.1},{BOTTOM} {} {last_x:.1},{BOTTOM}\"/>\
                     <polyline class=\"line\" points=\"{}\"/>",
                    coords.join(" "),
                    coords.join(" ")
                );
            }
        }
        segment.clear();
    };
    for (t, v) in points {
        match v.filter(|v| v.is_finite()) {
            Some(v) => segment.push((x(*t), y(v))),
            None => flush(&mut segment, &mut s),
        }
    }
    flush(&mut segment, &mut s);
    s.push_str("</svg>");
    s
}
