//! The chart the README shows: five panels of grouped bars (wharf, nginx, distribution), each group
//! with the target for wharf as a red line, drawn from the same figures as the table.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{num, Report, SERVERS};

const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The medians of one metric of one case, per server.
fn values(r: &Report, case: &str, metric: &str) -> [Option<f64>; 3] {
    r.cases
        .iter()
        .find(|c| c.id == case)
        .and_then(|c| c.metrics.iter().find(|m| m.name == metric))
        .map(|m| [m.value(0), m.value(1), m.value(2)])
        .unwrap_or([None; 3])
}

/// Each server's value divided by nginx's (throughput relative to the static server).
fn vs_nginx(v: [Option<f64>; 3]) -> [Option<f64>; 3] {
    match v[1] {
        Some(n) if n > 0.0 => v.map(|x| x.map(|x| x / n)),
        _ => [None; 3],
    }
}

/// A group of bars: label, per-server values, wharf's target.
type Group<'a> = (&'a str, [Option<f64>; 3], Option<f64>);

struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    groups: Vec<Group<'a>>,
    /// Log10 y axis (for figures that differ by orders of magnitude).
    log: bool,
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

fn draw_panel(area: &Area, p: &Panel) -> Result<()> {
    let tf = |v: f64| if p.log { v.max(1e-9).log10() } else { v };
    let all: Vec<f64> = p
        .groups
        .iter()
        .flat_map(|(_, v, t)| v.iter().flatten().chain(t).copied())
        .filter(|v| v.is_finite())
        .collect();
    let max = all.iter().copied().fold(f64::NAN, f64::max);
    let min = all.iter().copied().fold(f64::NAN, f64::min);
    // Headroom above the tallest bar for its label and the legend.
    let (y0, y1) = if p.log {
        (tf(min).floor().min(0.0), (tf(max) + 0.8).ceil().max(1.0))
    } else {
        (0.0, if max.is_finite() { max * 1.45 } else { 1.0 })
    };
    let n = p.groups.len();
    let names: Vec<&str> = p.groups.iter().map(|(g, _, _)| *g).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y0..y1)
        .map_err(err)?;
    let log = p.log;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.05 && i >= 0.0 {
                names.get(i as usize).copied().unwrap_or("").to_owned()
            } else {
                String::new()
            }
        })
        .y_desc(p.y_desc)
        .y_label_formatter(&|y| {
            if log {
                num(10f64.powf(*y))
            } else {
                num(*y)
            }
        })
        .draw()
        .map_err(err)?;
    let width = 0.8 / 3.0;
    let label_style = ("sans-serif", 11)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (k, server) in SERVERS.iter().enumerate() {
        let color = COLORS[k];
        let bars: Vec<(f64, f64)> = p
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, (_, v, _))| v[k].map(|v| (g as f64 - 0.4 + k as f64 * width, v)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x, v)| {
                Rectangle::new([(x + 0.01, y0), (x + width - 0.01, tf(v))], color.filled())
            }))
            .map_err(err)?
            .label(*server)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(
                bars.iter().map(|&(x, v)| {
                    Text::new(num(v), (x + width / 2.0, tf(v)), label_style.clone())
                }),
            )
            .map_err(err)?;
    }
    let targets: Vec<(f64, f64)> = p
        .groups
        .iter()
        .enumerate()
        .filter_map(|(g, (_, _, t))| t.map(|t| (g as f64, tf(t))))
        .collect();
    if !targets.is_empty() {
        chart
            .draw_series(targets.iter().map(|&(g, t)| {
                PathElement::new(vec![(g - 0.45, t), (g + 0.45, t)], RED.stroke_width(2))
            }))
            .map_err(err)?
            .label("wharf's target")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

pub fn draw(r: &Report, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 1180)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mode = if r.quick { "quick run" } else { "full run" };
    let root = root
        .titled(
            &format!(
                "wharf vs nginx vs distribution — loopback, {} CPUs shared by servers and clients, \
                 medians ({mode}, {} MiB blobs)",
                r.machine.cpus,
                r.blob_bytes >> 20
            ),
            ("sans-serif", 19),
        )
        .map_err(err)?;
    let (top, bottom) = root.split_vertically(760);
    let panels = top.split_evenly((2, 2));
    let specs = [
        Panel {
            title: "Throughput ÷ nginx (higher is better)",
            y_desc: "× nginx",
            groups: vec![
                (
                    "blob, 1 stream",
                    vs_nginx(values(r, "1", "throughput")),
                    Some(1.0),
                ),
                (
                    "blob, 16 streams",
                    vs_nginx(values(r, "2", "aggregate throughput")),
                    Some(1.0),
                ),
                (
                    "manifest GET",
                    vs_nginx(values(r, "3a", "requests")),
                    Some(0.5),
                ),
                (
                    "manifest HEAD",
                    vs_nginx(values(r, "3b", "requests")),
                    Some(0.5),
                ),
                (
                    "blob HEAD",
                    vs_nginx(values(r, "3c", "requests")),
                    Some(0.5),
                ),
            ],
            log: false,
        },
        Panel {
            title: "Server CPU per request, µs (lower is better)",
            y_desc: "µs (log scale)",
            groups: vec![
                ("manifest GET", values(r, "3a", "server CPU"), Some(30.0)),
                ("manifest HEAD", values(r, "3b", "server CPU"), Some(30.0)),
                ("blob HEAD", values(r, "3c", "server CPU"), Some(30.0)),
            ],
            log: true,
        },
        Panel {
            title: "Peak RSS, MiB (lower is better)",
            y_desc: "MiB",
            groups: vec![
                (
                    "blob, 16 streams",
                    values(r, "2", "peak RSS, max"),
                    Some(64.0),
                ),
                ("manifest GET", values(r, "3a", "peak RSS, max"), None),
                ("cold pull", values(r, "4", "peak RSS, max"), None),
            ],
            log: false,
        },
        Panel {
            title: "Server CPU per GB, s (lower is better; @1G, @10G: upstream paced)",
            y_desc: "s per GB",
            groups: vec![
                ("warm, 16", values(r, "2", "server CPU"), None),
                ("cold", values(r, "4", "server CPU"), None),
                ("cold @1G", values(r, "4-1g", "server CPU"), None),
                ("8 cold", values(r, "5", "server CPU"), None),
                ("8 cold @10G", values(r, "5-10g", "server CPU"), None),
            ],
            log: false,
        },
    ];
    for (area, p) in panels.iter().zip(specs.iter()) {
        draw_panel(area, p)?;
    }
    let mirror = Panel {
        title: "Mirror: loopback, and the upstream paced at 1 Gbit/s (@1G) and 10 Gbit/s (@10G); \
                distribution in proxy mode",
        y_desc: "ratio / count",
        groups: vec![
            ("cold ÷ direct", values(r, "4", "cold ÷ direct"), None),
            (
                "cold ÷ ceiling",
                values(r, "4", "cold ÷ verifying ceiling"),
                Some(0.8),
            ),
            (
                "@1G: cold ÷ direct",
                values(r, "4-1g", "cold ÷ direct"),
                Some(0.95),
            ),
            (
                "@10G: cold ÷ direct",
                values(r, "4-10g", "cold ÷ direct"),
                Some(0.95),
            ),
            (
                "8 ÷ one pull",
                values(r, "5", "all done ÷ one cold pull"),
                Some(1.1),
            ),
            (
                "@1G: 8 ÷ one",
                values(r, "5-1g", "all done ÷ one cold pull"),
                Some(1.1),
            ),
            (
                "@10G: 8 ÷ one",
                values(r, "5-10g", "all done ÷ one cold pull"),
                None,
            ),
            (
                "8: upstream GETs",
                values(r, "5", "upstream GETs, max"),
                Some(1.0),
            ),
        ],
        log: false,
    };
    draw_panel(&bottom, &mirror)?;
    root.present().map_err(err)?;
    Ok(())
}
