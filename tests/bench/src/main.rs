//! wharf-bench: runs issue 5's cases against wharf, nginx and the CNCF distribution registry on
//! loopback, all in one run, and prints one table of medians and ratios (plus JSON and an SVG chart).
//!
//! Run it through `tests/bench/run.sh [--quick]`, which installs the tools and builds wharf in
//! release. Nothing here asserts on time: it prints figures.

mod cases;
mod chart;
mod http;
mod load;
mod pace;
mod pki;
mod procstat;
mod report;
mod seed;
mod servers;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use report::{CaseResult, Machine, Report};

const USAGE: &str =
    "usage: wharf-bench [--quick] [--only 1,2,3,4,5,6,7,8,9,10,11 (or one link: 4-1g, 10-10g)] \
[--blob-mib N] \
[--wharf PATH] [--baseline PATH] [--backends] [--out DIR] [--docs FILE] [--keep]
  --baseline PATH  a second wharf binary (an older build) measured beside --wharf in cases 1, 2, 3
                   and 7, interleaved; the table adds its column and wharf ÷ baseline (w/base)
  --backends       also wharf on S3 (a Garage node) + Postgres, started for the run, in cases 1
                   (from its local cache, and 1-s3cold with none), 3 and 4, interleaved with wharf
                   on files + redb; the table adds its column (s3+pg) and s3+pg ÷ fs+redb (s3/fs)";

/// The cases that measure the baseline wharf.
const BASELINE_CASES: [&str; 4] = ["1", "2", "3", "7"];
/// The cases that measure wharf on the shared backends (`--backends`); the first two on a wharf
/// seeded at the start, case 4 on fresh ones.
const BACKEND_CASES: [&str; 3] = ["1", "3", "4"];

struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    blob_mib: Option<u64>,
    wharf: PathBuf,
    baseline: Option<PathBuf>,
    backends: bool,
    out: PathBuf,
    docs: Option<PathBuf>,
    keep: bool,
}

fn parse_args() -> Result<Args> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    let mut a = Args {
        quick: false,
        only: None,
        blob_mib: None,
        wharf: repo.join("target/release/wharf"),
        baseline: None,
        backends: false,
        out: crate_dir.join("out"),
        docs: Some(repo.join("docs/bench.svg")),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--only" => a.only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--blob-mib" => a.blob_mib = Some(value()?.parse()?),
            "--wharf" => a.wharf = value()?.into(),
            "--baseline" => a.baseline = Some(value()?.into()),
            "--backends" => a.backends = true,
            "--out" => a.out = value()?.into(),
            "--docs" => a.docs = Some(value()?.into()),
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    Ok(a)
}

fn require_tools() -> Result<()> {
    for tool in ["nginx", "docker-registry", "wrk"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("{tool} is not installed (tests/bench/run.sh installs it)");
        }
    }
    Ok(())
}

/// What `wharf --version` prints, to tell the two builds apart in the report.
fn version_of(bin: &Path) -> Result<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed ({}): is it a wharf binary?",
            bin.display(),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // /usr/sbin is where Debian puts nginx and tc; a non-root PATH may lack it.
    if let Some(p) = std::env::var_os("PATH") {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&p).collect();
        dirs.push("/usr/sbin".into());
        std::env::set_var("PATH", std::env::join_paths(dirs)?);
    }
    require_tools()?;
    if !args.wharf.is_file() {
        bail!(
            "no wharf binary at {} (cargo build --release -p wharf)",
            args.wharf.display()
        );
    }
    if let Some(b) = &args.baseline {
        if !b.is_file() {
            bail!(
                "--baseline: no wharf binary at {} (give the path of an older release build, e.g. \
                 <its checkout>/target/release/wharf)",
                b.display()
            );
        }
    }
    // Before any thread or socket: the whole run moves to a loopback of its own, which the paced
    // cases shape. Without root the run stays on the machine's loopback and skips them.
    let netns = pace::enter_private_netns().map_err(|e| format!("{e:#}"));
    if let Err(why) = &netns {
        eprintln!("paced cases will be skipped: {why}");
    }
    // `--only 3` or `--only 3a`: cases run whole (3 measures 3a, 3b and 3c together). `--only 4`
    // runs case 4 on every link, `--only 4-1g` only the paced one.
    let wants = |id: &str| {
        args.only.as_ref().is_none_or(|o| {
            o.iter().any(|x| match id.split_once('-') {
                Some(_) => x == id || id.starts_with(&format!("{x}-")),
                // "3a" runs case 3; "10" is not case 1.
                None => x
                    .strip_prefix(id)
                    .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_alphabetic())),
            })
        })
    };
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let background = procstat::background_cpus(1.0);
    eprintln!(
        "machine: {cpus} CPUs, load average {loadavg}, other processes using {background:.2} CPUs"
    );

    let baseline = match &args.baseline {
        Some(path) => {
            let cases: Vec<String> = BASELINE_CASES
                .iter()
                .filter(|c| wants(c))
                .map(|c| c.to_string())
                .collect();
            if cases.is_empty() {
                eprintln!(
                    "--baseline: none of the cases that measure it ({}) is selected",
                    BASELINE_CASES.join(", ")
                );
            }
            Some(report::Baseline {
                // Absolute: the report should still say which build it was when read later.
                path: std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string(),
                version: version_of(path)?,
                wharf_version: version_of(&args.wharf)?,
                cases,
            })
        }
        None => None,
    };
    // Case 4 counts as chosen by `--only 4-1g` too.
    let wants_any = |c: &str| {
        wants(c)
            || args
                .only
                .iter()
                .flatten()
                .any(|x| x.starts_with(&format!("{c}-")))
    };
    let backend_cases: Vec<String> = BACKEND_CASES
        .iter()
        .filter(|c| args.backends && wants_any(c))
        .map(|c| c.to_string())
        .collect();
    if args.backends && backend_cases.is_empty() {
        eprintln!(
            "--backends: none of the cases that measure it ({}) is selected",
            BACKEND_CASES.join(", ")
        );
    }
    let backends_need = if backend_cases.iter().any(|c| c != "4") {
        cases::BackendsNeed::Wharfs
    } else if backend_cases.is_empty() {
        cases::BackendsNeed::None
    } else {
        cases::BackendsNeed::Servers
    };
    let settings = cases::Settings::new(args.quick, args.blob_mib);
    let tmp = tempfile::Builder::new().prefix("wharf-bench-").tempdir()?;
    let env = cases::setup(
        settings.clone(),
        args.wharf.clone(),
        args.baseline.clone(),
        ["1", "2", "3"].iter().any(|c| wants(c)),
        backends_need,
        tmp.path().to_owned(),
    )?;
    let backends = env.backends.as_ref().map(|b| report::Backends {
        servers: b.shared.versions.clone(),
        cases: backend_cases.clone(),
    });

    let mut results: Vec<CaseResult> = Vec::new();
    // A case that fails is reported as such; the others still run.
    let failed = |id: &str, title: &str, e: anyhow::Error| CaseResult {
        id: id.into(),
        title: title.into(),
        metrics: vec![],
        notes: vec![format!("FAILED: {e:#}")],
    };
    let mut step = |id: &str, title: &str, f: &mut dyn FnMut() -> Result<Vec<CaseResult>>| {
        if !wants(id) {
            return;
        }
        let t = Instant::now();
        eprintln!("case {id}: {title} …");
        match f() {
            Ok(r) => results.extend(r),
            Err(e) => {
                eprintln!("case {id} failed: {e:#}");
                results.push(failed(id, title, e));
            }
        }
        eprintln!("case {id} done in {:.1}s", t.elapsed().as_secs_f64());
    };
    step("1", "warm blob GET, one stream", &mut || {
        cases::blob_one_stream(&env)
    });
    step("2", "warm blob GET, 16 streams", &mut || {
        Ok(vec![cases::blob_concurrent(&env)?])
    });
    step("3", "manifest GET/HEAD, blob HEAD", &mut || {
        cases::request_rates(&env)
    });
    // Loopback first, then the upstream paced at 1 and 10 Gbit/s (ids 4-1g, 4-10g, 5-1g, 5-10g).
    let links = [None, Some(1.0), Some(10.0)].map(cases::Link);
    let paced_ok = |link: cases::Link| match (&netns, link.0) {
        (Err(why), Some(_)) => Err(anyhow::anyhow!("not paced: {why}")),
        _ => Ok(()),
    };
    for link in links {
        step(
            &format!("4{}", link.suffix()),
            "cold pull through the mirror",
            &mut || {
                paced_ok(link)?;
                Ok(vec![cases::cold_pull_case(&env, link)?])
            },
        );
    }
    for link in links {
        step(
            &format!("5{}", link.suffix()),
            "concurrent cold pulls",
            &mut || {
                paced_ok(link)?;
                Ok(vec![cases::herd_case(&env, link)?])
            },
        );
    }
    step("6", "storage", &mut || Ok(vec![cases::storage_case(&env)?]));
    step("7", "plugin overhead per request", &mut || {
        cases::plugins_case(&env)
    });
    step(
        "8",
        "garbage collection while manifest GETs run",
        &mut || Ok(vec![cases::gc_case(&env)?]),
    );
    step(
        "9",
        "platform reduction: upstream bytes, full vs reduced mirror",
        &mut || Ok(vec![cases::platforms_case(&env)?]),
    );
    for link in links {
        step(
            &format!("10{}", link.suffix()),
            "push through a write-through route vs direct",
            &mut || {
                paced_ok(link)?;
                Ok(vec![cases::push_case(&env, link)?])
            },
        );
    }
    step(
        "11",
        "TLS listener: blob and manifest GET, wharf and nginx",
        &mut || cases::tls_case(&env),
    );

    let bg: Vec<f64> = env
        .costs
        .borrow()
        .iter()
        .filter(|c| c.wall_s > 0.0)
        .map(|c| c.background_cpu_s / c.wall_s)
        .collect();
    let steal: Vec<f64> = env
        .costs
        .borrow()
        .iter()
        .filter(|c| c.wall_s > 0.0)
        .map(|c| c.steal_s / c.wall_s)
        .collect();
    let report = Report {
        quick: args.quick,
        blob_bytes: settings.blob_bytes,
        reps: settings.reps,
        load_secs: settings.load_secs,
        connections: settings.conns,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        baseline,
        backends,
        machine: Machine {
            cpus,
            loadavg_at_start: loadavg,
            background_cpus_at_start: background,
            background_cpus_during_runs: report::median(&bg),
            steal_cpus_during_runs: report::median(&steal),
        },
        cases: results,
    };
    drop(env);
    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept servers' files in {}", kept.display());
    }

    println!();
    println!(
        "wharf-bench ({}): {} blobs, medians of {} runs ({} for 16 streams), {}s load at {} \
         connections",
        if args.quick { "quick" } else { "full" },
        if settings.blob_bytes.is_multiple_of(1 << 30) {
            format!("{} GiB", settings.blob_bytes >> 30)
        } else {
            format!("{} MiB", settings.blob_bytes >> 20)
        },
        settings.reps,
        settings.reps_parallel,
        settings.load_secs,
        settings.conns
    );
    println!(
        "machine: {cpus} CPUs shared by the servers AND the load generators (wrk, the driver); \
         other work on the machine used {:.2} CPUs before the run and a median {:.2} CPUs during \
         the measurements (steal {:.2}). Throughput figures move with that noise; server CPU per \
         request or per GB is the steadiest figure.",
        report.machine.background_cpus_at_start,
        report.machine.background_cpus_during_runs,
        report.machine.steal_cpus_during_runs
    );
    if let Some(b) = &report.baseline {
        println!(
            "baseline: {} ({}), measured beside this wharf ({}) in cases {}, each with its own data \
             dir seeded the same way, interleaved within each repetition; w/base = wharf ÷ baseline.",
            b.path,
            b.version,
            b.wharf_version,
            b.cases.join(", ")
        );
    }
    if let Some(b) = &report.backends {
        println!(
            "backends: s3+pg = this wharf on S3 + Postgres ({}, each started for the run on \
             loopback), measured beside it on files + redb (the wharf column) in cases {}, \
             interleaved within each repetition; s3/fs = s3+pg ÷ fs+redb; 1-s3cold: a second wharf \
             on the same bucket and database with no local cache.",
            b.servers,
            b.cases.join(", ")
        );
    }
    println!();
    print!("{}", report::table(&report));

    std::fs::create_dir_all(&args.out)?;
    let json = args.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let svg = args.out.join("bench.svg");
    chart::draw(&report, &svg)?;
    println!();
    println!("figures: {}", json.display());
    println!("chart:   {}", svg.display());
    // The README shows docs/bench.svg: only a full run of every case replaces it.
    if let Some(docs) = &args.docs {
        if !args.quick && args.only.is_none() && args.blob_mib.is_none() {
            if let Some(dir) = docs.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(&svg, docs)?;
            println!("copied:  {}", docs.display());
        }
    }
    println!("took {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
