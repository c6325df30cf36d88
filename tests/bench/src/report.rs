//! The results: per case, metrics (medians over repetitions, with the samples) for each server, the
//! issue's target where it has one, printed as one table and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

pub const SERVERS: [&str; 3] = ["wharf", "nginx", "distribution"];

#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// What the table shows: the median of `samples` (for a peak, their maximum).
    pub value: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn median(samples: Vec<f64>) -> Stat {
        Stat {
            value: median(&samples),
            samples,
        }
    }

    pub fn max(samples: Vec<f64>) -> Stat {
        Stat {
            value: samples.iter().copied().fold(f64::NAN, f64::max),
            samples,
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The wording, e.g. "≥ 1.0× nginx".
    pub text: String,
    /// None: could not be judged (a server failed, or the case did not run).
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    /// Per server (`SERVERS` order); None where the server has no such figure.
    pub values: [Option<Stat>; 3],
    /// The baseline wharf's figure (`--baseline`), in the cases that measure it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Stat>,
    /// The figure of wharf on S3 + Postgres (`--backends`), in the cases that measure it; the
    /// `wharf` column is then wharf on files + redb.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Stat>,
    pub target: Option<Target>,
    /// Issue 26's goal for s3+pg ÷ fs+redb, beside (not instead of) the row's own target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends_target: Option<Target>,
}

impl Metric {
    pub fn new(name: &str, unit: &str, values: [Option<Stat>; 3]) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            values,
            baseline: None,
            backends: None,
            target: None,
            backends_target: None,
        }
    }

    pub fn with_baseline(mut self, baseline: Option<Stat>) -> Metric {
        self.baseline = baseline;
        self
    }

    pub fn with_target(mut self, text: &str, met: Option<bool>) -> Metric {
        self.target = Some(Target {
            text: text.into(),
            met,
        });
        self
    }

    pub fn with_backends(mut self, backends: Option<Stat>) -> Metric {
        self.backends = backends;
        self
    }

    /// A goal for s3+pg ÷ fs+redb: at least `factor` (a rate) or at most `factor` (a cost).
    pub fn with_backends_goal(mut self, text: &str, at_least: bool, factor: f64) -> Metric {
        let met = self
            .backends_ratio()
            .map(|r| if at_least { r >= factor } else { r <= factor });
        self.backends_target = Some(Target {
            text: text.into(),
            met,
        });
        self
    }

    pub fn value(&self, server: usize) -> Option<f64> {
        self.values[server]
            .as_ref()
            .map(|s| s.value)
            .filter(|v| v.is_finite())
    }

    /// wharf ÷ `other` (1 = nginx, 2 = distribution).
    pub fn ratio(&self, other: usize) -> Option<f64> {
        match (self.value(0), self.value(other)) {
            (Some(w), Some(o)) if o != 0.0 => Some(w / o),
            _ => None,
        }
    }

    pub fn baseline_value(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|s| s.value)
            .filter(|v| v.is_finite())
    }

    pub fn backends_value(&self) -> Option<f64> {
        self.backends
            .as_ref()
            .map(|s| s.value)
            .filter(|v| v.is_finite())
    }

    /// wharf on S3 + Postgres ÷ wharf on files + redb, measured in one run.
    pub fn backends_ratio(&self) -> Option<f64> {
        match (self.backends_value(), self.value(0)) {
            (Some(s), Some(f)) if f != 0.0 => Some(s / f),
            _ => None,
        }
    }

    /// wharf ÷ the baseline wharf: the before/after of one change, measured in one run.
    pub fn baseline_ratio(&self) -> Option<f64> {
        match (self.value(0), self.baseline_value()) {
            (Some(w), Some(b)) if b != 0.0 => Some(w / b),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub metrics: Vec<Metric>,
    /// What the figures mean or how they were taken (server modes, errors seen).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub loadavg_at_start: String,
    /// CPUs' worth of work other processes did while the driver slept for a second before the run.
    pub background_cpus_at_start: f64,
    /// Median over all measured runs of the background CPUs (other processes' CPU ÷ wall).
    pub background_cpus_during_runs: f64,
    pub steal_cpus_during_runs: f64,
}

/// `--backends`: wharf on S3 (Garage) + Postgres measured beside wharf on files + redb.
#[derive(Debug, Clone, Serialize)]
pub struct Backends {
    /// Garage's and Postgres's versions.
    pub servers: String,
    /// The cases that measured it.
    pub cases: Vec<String>,
}

/// The second wharf of `--baseline`: an older build measured beside the checkout's.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub path: String,
    /// What `--version` printed, for each binary (`wharf` the checkout's).
    pub version: String,
    pub wharf_version: String,
    /// The cases that measured it.
    pub cases: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub quick: bool,
    pub blob_bytes: u64,
    pub reps: usize,
    pub load_secs: u32,
    pub connections: u32,
    pub unix_time: u64,
    pub machine: Machine,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Backends>,
    pub cases: Vec<CaseResult>,
}

/// Compact numbers: 93,210 / 812 / 41.3 / 2.47 / 0.083.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 10_000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(if v < 0.0 { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(c) if unit == "count" => format!("{c:.0}"),
        Some(v) => num(v),
        None => "—".into(),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map(|r| format!("{}×", num(r)))
        .unwrap_or_else(|| "—".into())
}

fn met_text(t: &Target) -> &'static str {
    match t.met {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "?",
    }
}

/// The whole table, ready to print: a heading line per case, its metrics below. With a baseline
/// wharf its figures and wharf ÷ baseline stand beside wharf's; with `--backends`, wharf on S3 +
/// Postgres and its ratio to wharf on files + redb (s3/fs), and its goal on a line of its own.
pub fn table(r: &Report) -> String {
    let with_base = r.baseline.is_some();
    let with_backends = r.backends.is_some();
    let mut head = vec![("case / metric", 34), ("wharf", 10)];
    if with_base {
        head.push(("baseline", 10));
    }
    if with_backends {
        head.push(("s3+pg", 10));
    }
    head.extend([("nginx", 10), ("distrib.", 10)]);
    if with_base {
        head.push(("w/base", 8));
    }
    if with_backends {
        head.push(("s3/fs", 8));
    }
    head.extend([("w/nginx", 8), ("w/dist", 8), ("target", 32), ("met", 7)]);
    let w: Vec<usize> = head.iter().map(|(_, w)| *w).collect();
    // Text columns (the first and the last two) left, figures right.
    let figures = 1..w.len() - 2;
    let row = |out: &mut String, cells: &[&str]| {
        let mut line = String::new();
        for (i, (c, &width)) in cells.iter().zip(&w).enumerate() {
            if figures.contains(&i) {
                let _ = write!(line, "{c:>width$} ");
            } else {
                let _ = write!(line, "{c:<width$} ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    };
    let mut out = String::new();
    let names: Vec<&str> = head.iter().map(|(n, _)| *n).collect();
    row(&mut out, &names);
    let rule = "-".repeat(w.iter().sum::<usize>() + w.len());
    for c in &r.cases {
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(out, "{} {}", c.id, c.title);
        for m in &c.metrics {
            let name = format!("  {} ({})", m.name, m.unit);
            let (ttext, met) = match &m.target {
                Some(t) => (t.text.clone(), met_text(t)),
                None => (String::new(), ""),
            };
            let mut cells = vec![name, opt(m.value(0), &m.unit)];
            if with_base {
                cells.push(opt(m.baseline_value(), &m.unit));
            }
            if with_backends {
                cells.push(opt(m.backends_value(), &m.unit));
            }
            cells.extend([opt(m.value(1), &m.unit), opt(m.value(2), &m.unit)]);
            if with_base {
                cells.push(ratio(m.baseline_ratio()));
            }
            if with_backends {
                cells.push(ratio(m.backends_ratio()));
            }
            cells.extend([ratio(m.ratio(1)), ratio(m.ratio(2)), ttext, met.into()]);
            let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
            row(&mut out, &cells);
            // The backends' goal under the row it judges, in the target column.
            if let Some(t) = m.backends_target.as_ref().filter(|_| with_backends) {
                let mut cells = vec![String::new(); w.len() - 2];
                cells.extend([t.text.clone(), met_text(t).into()]);
                let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
                row(&mut out, &cells);
            }
        }
        // A case without figures (not implemented, or failed) says why on its own line.
        let prefix = if c.metrics.is_empty() { "" } else { "note: " };
        for n in &c.notes {
            let _ = writeln!(out, "  {prefix}{n}");
        }
    }
    let _ = writeln!(out, "{rule}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(num(93210.4), "93,210");
        assert_eq!(num(812.3), "812");
        assert_eq!(num(41.26), "41.3");
        assert_eq!(num(2.468), "2.47");
        assert_eq!(num(0.0834), "0.083");
    }

    fn report(baseline: Option<Baseline>, metric: Metric) -> Report {
        Report {
            quick: true,
            blob_bytes: 1,
            reps: 1,
            load_secs: 1,
            connections: 1,
            unix_time: 0,
            machine: Machine {
                cpus: 2,
                loadavg_at_start: String::new(),
                background_cpus_at_start: 0.0,
                background_cpus_during_runs: 0.0,
                steal_cpus_during_runs: 0.0,
            },
            baseline,
            backends: None,
            cases: vec![CaseResult {
                id: "3a".into(),
                title: "manifest GET by tag (wrk)".into(),
                metrics: vec![metric],
                notes: vec![],
            }],
        }
    }

    fn one(v: f64) -> Option<Stat> {
        Some(Stat::median(vec![v]))
    }

    /// Without `--baseline` the table and the JSON are what they were before the flag existed.
    #[test]
    fn no_baseline_no_change() {
        let m = Metric::new(
            "requests",
            "req/s",
            [one(30000.0), one(40000.0), one(900.0)],
        );
        let r = report(None, m);
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "case / metric                           wharf      nginx   distrib.  w/nginx   w/dist \
             target                           met"
        );
        assert_eq!(
            lines[3],
            "  requests (req/s)                     30,000     40,000        900    0.75×    33.3×"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("baseline"), "{json}");
        assert!(!json.contains("backends"), "{json}");
    }

    /// `--backends`: the s3+pg column, s3/fs, and the goal on a line of its own under its row.
    #[test]
    fn backends_column_ratio_and_goal() {
        let m = Metric::new(
            "requests",
            "req/s",
            [one(30000.0), one(40000.0), one(900.0)],
        )
        .with_target("≥ 0.5× nginx", Some(true))
        .with_backends(one(27000.0))
        .with_backends_goal("s3+pg ≥ 0.8× fs+redb", true, 0.8);
        assert_eq!(m.backends_target.as_ref().unwrap().met, Some(true));
        let mut r = report(None, m);
        r.backends = Some(Backends {
            servers: "garage, PostgreSQL".into(),
            cases: vec!["3".into()],
        });
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        let head: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            head,
            [
                "case", "/", "metric", "wharf", "s3+pg", "nginx", "distrib.", "s3/fs", "w/nginx",
                "w/dist", "target", "met"
            ]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "requests", "(req/s)", "30,000", "27,000", "40,000", "900", "0.90×", "0.75×",
                "33.3×", "≥", "0.5×", "nginx", "met"
            ]
        );
        // The goal stands in the target column, under the row's own target.
        let column = |line: &str, pat: &str| line.find(pat).map(|i| line[..i].chars().count());
        assert_eq!(
            column(lines[4], "s3+pg ≥ 0.8×"),
            column(lines[3], "≥ 0.5×"),
            "{t}"
        );
        assert!(lines[4].trim_end().ends_with("met"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["cases"][0]["metrics"][0]["backends"]["value"], 27000.0);
        assert_eq!(
            json["cases"][0]["metrics"][0]["backends_target"]["met"],
            true
        );
    }

    #[test]
    fn baseline_column_and_ratio() {
        let m = Metric::new(
            "requests",
            "req/s",
            [one(30000.0), one(40000.0), one(900.0)],
        )
        .with_baseline(one(25000.0));
        let b = Baseline {
            path: "/old/wharf".into(),
            version: "wharf 0.1.0".into(),
            wharf_version: "wharf 0.1.0".into(),
            cases: vec!["3".into()],
        };
        let r = report(Some(b), m);
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        let head: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            head,
            [
                "case", "/", "metric", "wharf", "baseline", "nginx", "distrib.", "w/base",
                "w/nginx", "w/dist", "target", "met"
            ]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "requests", "(req/s)", "30,000", "25,000", "40,000", "900", "1.20×", "0.75×",
                "33.3×"
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["baseline"]["path"], "/old/wharf");
        assert_eq!(json["cases"][0]["metrics"][0]["baseline"]["value"], 25000.0);
    }
}
