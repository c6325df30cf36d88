use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use wharf_model::config::Config;
use wharf_model::units::human_bytes;

/// A registry-protocol proxy for container images.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum PushCommand {
    /// List pending, delivering, delivered and failed deliveries, with upstream digests and errors.
    Status {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try a failed (or waiting) delivery again now.
    Retry { id: u64 },
    /// Forget a delivery and release the lease over its content.
    Drop { id: u64 },
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API (defaults: 127.0.0.1:5000, data under ~/.local/share/wharf).
    Serve {
        /// TOML config file; every key is optional (see examples/wharf.toml).
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (file, defaults and WHARF_* overrides) as TOML that
    /// `wharf serve --config` accepts, and exit. Passwords are never printed.
    Config {
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file: print every mistake `wharf serve` would stop on (unknown keys, bad
    /// values, missing files, upstreams, push routes and plugins it would refuse), one per line as
    /// `<key>: <problem>; <fix>`, or `ok: <file>`. Exit status 1 when there is any.
    CheckConfig {
        /// The TOML config file.
        #[arg(required_unless_present = "config")]
        file: Option<PathBuf>,
        /// The same, named as every other command names it (or $WHARF_CONFIG).
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Collect garbage now: remove content no tag, lease or recent use keeps, and print what was
    /// removed (through the running server when there is one, else on the files).
    Gc {
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify what wharf stores: re-hash every blob and manifest, quarantine damaged ones (moved to
    /// <data_dir>/quarantine/: the mirror fetches them again, a push uploads them again), check that
    /// every record has its content, and print what is wrong, naming the repositories concerned.
    /// Exit status 1 when anything is. A stopped pass goes on from where it stopped. Through the
    /// running server when there is one, else on the files (the metadata's pages checked first).
    Fsck {
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Bytes read per second at most (default: scrub.max_bytes_per_sec; 0: as fast as the disk
        /// goes).
        #[arg(long)]
        max_bytes_per_sec: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The push gateway's deliveries ([[push]] routes): list them, retry one, or drop one (through
    /// the running server when there is one, else on the files).
    Push {
        #[arg(long, short, env = "WHARF_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: PushCommand,
    },
    /// List the leases that keep content from the collector, or release one.
    Leases {
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Release this lease now instead of listing.
        #[arg(long)]
        release: Option<String>,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the images wharf holds: repository, tag, image ID, platforms present, size (each blob
    /// once), last use, and where a reduced or rewritten index came from.
    Images {
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// List the images no tag reaches instead (the next collection reclaims them).
        #[arg(long)]
        dangling: bool,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<ImagesCommand>,
    },
    /// What the cache holds by upstream and repository (count, bytes), its hit ratio and bytes served
    /// since the server started, the last collection, and pending or failed pushes (through the
    /// running server when there is one, else on the files).
    Status {
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an image as an OCI image layout tar (or, with --format docker, what `docker load`
    /// reads), with only the chosen platforms: what is not cached is fetched through wharf (its mirror
    /// and platform policy), nothing of other platforms.
    Export {
        /// What a client would pull from wharf: docker.io/library/alpine:3, team/app:v1,
        /// name@sha256:….
        reference: String,
        /// The archive to write.
        #[arg(long, short)]
        output: PathBuf,
        /// A platform to export (os/arch[/variant]); repeat for more. Default: what wharf's
        /// platform policy keeps (every platform when it has none).
        #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platforms: Vec<wharf_model::platform::PlatformSpec>,
        /// Point index.json at an index reduced to the chosen platforms (annotated
        /// dev.wharf.reduced-from) instead of the original index.
        #[arg(long)]
        reduced: bool,
        /// oci: an OCI image layout (podman load, skopeo oci-archive:, ctr images import, wharf
        /// import); docker: `docker save`'s layout, one platform (docker load, podman load, skopeo
        /// docker-archive:, ctr images import).
        #[arg(long, value_name = "oci|docker", default_value = "oci", value_parser = parse_format)]
        format: wharf::archive::Format,
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load an OCI image layout tar (wharf export, skopeo oci-archive, ctr images export) into wharf
    /// through its registry API, keeping every digest.
    Import {
        file: PathBuf,
        /// REPO[:TAG] to store the image as; default: the name the archive gives it.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a cache between storage backends.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Tools for plugin authors: check a component, run one call offline, start a project.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Copy the content and the metadata of one wharf's storage into another's (files + redb to S3 +
    /// Postgres, or back, or any pair), verifying every digest. Content the destination holds is
    /// skipped and records are upserted in one transaction: a copy that stopped is run again. Upload
    /// sessions in progress are not copied. Stop the wharf serving a files/redb side first. Each side
    /// is what its file says (WHARF_* overrides are not read).
    Copy {
        /// The config of the storage to copy from.
        #[arg(long)]
        from: PathBuf,
        /// The config of the storage to copy into.
        #[arg(long)]
        to: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Fill the cache ahead of time with an image's chosen platforms (a CI warm-up): the same
    /// fetch as `wharf export`, writing no file.
    Pull {
        /// What a client would pull from wharf: docker.io/library/alpine:3, team/app:v1, ….
        reference: String,
        /// A platform to fetch; repeat for more. Default: what wharf's platform policy keeps.
        #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platforms: Vec<wharf_model::platform::PlatformSpec>,
        #[arg(long, short, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_format(s: &str) -> Result<wharf::archive::Format, String> {
    s.parse()
}

fn parse_platform(s: &str) -> Result<wharf_model::platform::PlatformSpec, String> {
    s.parse()
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load a component as `wharf serve` would and print what it exports and imports.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Evaluate one call of each capability the component exports, offline, and print the result
    /// and how long it took.
    Run {
        file: PathBuf,
        /// The string passed to the plugin's init (often JSON).
        #[arg(long, default_value = "")]
        config: String,
        /// pull, push, delete or list.
        #[arg(long, default_value = "pull")]
        op: String,
        /// The upstream registry host (leave out for a local repository).
        #[arg(long)]
        registry: Option<String>,
        #[arg(long)]
        repo: String,
        /// Tag or digest.
        #[arg(long = "ref")]
        reference: Option<String>,
        /// The caller's identity, as [auth] would have proved it (leave out for an anonymous caller).
        #[arg(long)]
        identity: Option<String>,
        /// For `platforms`: a JSON list of platforms, or an OCI image index.
        #[arg(long)]
        platforms: Option<PathBuf>,
        /// For `manifests`: a manifest file to rewrite.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The manifest's media type (read from the manifest when left out).
        #[arg(long)]
        media_type: Option<String>,
        /// The call deadline, as `timeout_ms` in a [[plugin]] entry.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Write a ready-to-build plugin project: the WIT, a minimal access policy, a README with the
    /// build command.
    New {
        name: String,
        /// rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where to create the project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Each read from an upstream lands in a fresh buffer of a few hundred KiB (hyper's), held until it is
/// written and hashed. glibc hands such buffers back to the kernel when freed and the next read then
/// faults in new zeroed pages: about a tenth of a cold pull's CPU (measured with perf). Serving them
/// from the heap and keeping a few MiB of freed memory for reuse avoids that.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (under the allocator's own lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

/// Prints to stdout through `wharf::output` (a reader that went away is an error, not a panic).
macro_rules! out {
    ($($arg:tt)*) => {
        wharf::output::stdout(format_args!($($arg)*))
    };
}

/// `out!` and a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        wharf::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`wharf images | head -1`): exit as a Unix tool SIGPIPE killed would,
        // with nothing said.
        Err(e) if wharf::output::is_closed(e.as_ref()) => {
            std::process::ExitCode::from(wharf::output::CLOSED_EXIT_STATUS)
        }
        Err(e) => {
            // The cause chain on one line, no backtrace: these errors say what to change. If stderr
            // is gone too there is no one left to tell.
            let _ = wharf::output::stderr(format_args!("wharf: {}\n", causes(&e)));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each cause left out when the message before already says it (many
/// errors print their source in their own message: `{path}: {source}`).
fn causes(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for c in e.chain() {
        let said = c.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // One line per request: batched, so logging costs a copy rather than a syscall per request.
    let writer = wharf::logbuf::BatchedWriter::new(std::io::stderr());
    let log = writer.flusher();
    // check-config and the plugin tools load plugins only to report on them: what the plugins log at
    // info (ready, loaded) is the server's business, not their output. Warnings still show, and
    // WHARF_LOG=info shows the rest.
    let default_filter = match cli.command {
        // storage copy says what it does itself: the backends' start lines would only repeat it.
        Command::CheckConfig { .. } | Command::Plugins { .. } | Command::Storage { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve { config } => {
            let cfg = Config::load(config.as_deref())?;
            keep_freed_memory();
            let served = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(cfg));
            log.flush();
            served
        }
        Command::CheckConfig { file, config } => {
            let Some(file) = file.or(config) else {
                unreachable!("clap requires one of them")
            };
            let problems = local_runtime()?.block_on(wharf::check_config::check_file(&file));
            log.flush();
            if problems.is_empty() {
                outln!("ok: {}", file.display())?;
                return Ok(());
            }
            for p in &problems {
                outln!("{p}")?;
            }
            anyhow::bail!(
                "{} in {}",
                wharf_model::config::problem_count(&problems),
                file.display()
            )
        }
        Command::Config { config } => {
            let cfg = Config::load(config.as_deref())?;
            out!("{}", cfg.to_toml()?)?;
            Ok(())
        }
        Command::Gc {
            config,
            dry_run,
            json,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let report = local_runtime()?.block_on(wharf::admin_client::gc(&cfg, dry_run))?;
            log.flush();
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                out!("{}", gc_text(&report))?;
            }
            Ok(())
        }
        Command::Fsck {
            config,
            max_bytes_per_sec,
            json,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let report =
                local_runtime()?.block_on(wharf::admin_client::fsck(&cfg, max_bytes_per_sec))?;
            log.flush();
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                out!("{}", fsck_text(&report))?;
            }
            anyhow::ensure!(
                report.clean(),
                "fsck found {} damaged and {} records without their content (listed above)",
                report.damaged.len(),
                report.problems.len()
            );
            Ok(())
        }
        Command::Status { config, json } => {
            let cfg = Config::load(config.as_deref())?;
            let status = local_runtime()?.block_on(wharf::admin_client::status(&cfg))?;
            log.flush();
            if json {
                outln!("{}", serde_json::to_string_pretty(&status)?)?;
            } else {
                out!("{}", wharf::status::text(&status))?;
            }
            Ok(())
        }
        Command::Push { config, command } => {
            let cfg = Config::load(config.as_deref())?;
            let rt = local_runtime()?;
            let (id, retry) = match command {
                PushCommand::Status { json } => {
                    let list = rt.block_on(wharf::admin_client::pushes(&cfg))?;
                    log.flush();
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&list)?)?;
                    } else {
                        out!("{}", pushes_text(&list))?;
                    }
                    return Ok(());
                }
                PushCommand::Retry { id } => (id, true),
                PushCommand::Drop { id } => (id, false),
            };
            let done = rt.block_on(wharf::admin_client::push_action(&cfg, id, retry))?;
            log.flush();
            let Some(s) = done else {
                anyhow::bail!(
                    "no delivery {id} in the push journal (list them with `wharf push status`)"
                );
            };
            if retry {
                outln!(
                    "delivery {id} ({}:{}) will be tried again now",
                    s.repository,
                    s.reference
                )?;
            } else {
                outln!(
                    "dropped delivery {id} ({}:{}); its lease is released",
                    s.repository,
                    s.reference
                )?;
            }
            Ok(())
        }
        Command::Leases {
            config,
            release,
            json,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let rt = local_runtime()?;
            if let Some(id) = release {
                let had = rt.block_on(wharf::admin_client::release_lease(&cfg, &id))?;
                log.flush();
                anyhow::ensure!(had, "no lease {id} (list them with `wharf leases`)");
                outln!("released lease {id}")?;
                return Ok(());
            }
            let list = rt.block_on(wharf::admin_client::leases(&cfg))?;
            log.flush();
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                out!("{}", leases_text(&list))?;
            }
            Ok(())
        }
        Command::Images {
            command:
                Some(ImagesCommand::Pull {
                    reference,
                    platforms,
                    config,
                    json,
                }),
            config: outer_config,
            ..
        } => {
            let cfg = Config::load(config.or(outer_config).as_deref())?;
            let r: wharf::archive::ImageRef = reference.parse()?;
            let choice = wharf::archive::Choice {
                platforms,
                reduced: false,
            };
            let report = archive_runtime()?.block_on(wharf::archive::pull(&cfg, &r, &choice));
            log.flush();
            print_archive_report(&report?, "fetched", json)
        }
        Command::Export {
            reference,
            output,
            platforms,
            reduced,
            format,
            config,
            json,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let r: wharf::archive::ImageRef = reference.parse()?;
            let choice = wharf::archive::Choice { platforms, reduced };
            let report = archive_runtime()?
                .block_on(wharf::archive::export(&cfg, &r, &choice, format, &output));
            log.flush();
            let report = report?;
            print_archive_report(&report, &format!("wrote {}:", output.display()), json)
        }
        Command::Import {
            file,
            tag,
            config,
            json,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let report =
                archive_runtime()?.block_on(wharf::archive::import(&cfg, &file, tag.as_deref()));
            log.flush();
            let report = report?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?)?;
                return Ok(());
            }
            for i in &report.images {
                match &i.reduced_from {
                    Some(orig) => {
                        outln!("imported {} ({}, reduced from {orig})", i.name, i.digest)?
                    }
                    None => outln!("imported {} ({})", i.name, i.digest)?,
                }
            }
            for n in &report.notes {
                outln!("note: {n}")?;
            }
            outln!(
                "{} manifests, {} blobs pushed ({}), {} already present",
                report.manifests,
                report.blobs_pushed,
                human_bytes(report.bytes),
                report.blobs_present
            )?;
            Ok(())
        }
        Command::Images {
            config,
            dangling,
            json,
            command: None,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let list = local_runtime()?.block_on(wharf::admin_client::images(&cfg, dangling))?;
            log.flush();
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                out!("{}", images_text(&list))?;
            }
            Ok(())
        }
        Command::Storage {
            command: StorageCommand::Copy { from, to, json },
        } => {
            use wharf::storage_copy::{self, Side};
            let (from_cfg, to_cfg) = (Config::parse_file(&from)?, Config::parse_file(&to)?);
            let report = archive_runtime()?.block_on(storage_copy::copy(
                Side {
                    path: &from,
                    cfg: &from_cfg,
                },
                Side {
                    path: &to,
                    cfg: &to_cfg,
                },
            ));
            log.flush();
            let report = report?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                out!("{}", storage_copy::text(&report))?;
            }
            match report.failure(&from) {
                Some(why) => anyhow::bail!(why),
                None => Ok(()),
            }
        }
        Command::Plugins { command } => {
            use wharf::plugins_cli as cli;
            let out = match command {
                PluginsCommand::Check { file } => cli::check(&file),
                PluginsCommand::Run {
                    file,
                    config,
                    op,
                    registry,
                    repo,
                    reference,
                    identity,
                    platforms,
                    manifest,
                    media_type,
                    timeout_ms,
                } => cli::context(&op, registry, repo, reference, identity).and_then(|ctx| {
                    cli::run(&cli::RunArgs {
                        path: file,
                        config,
                        ctx,
                        platforms,
                        manifest,
                        media_type,
                        timeout_ms,
                    })
                }),
                PluginsCommand::New { name, lang, dir } => cli::new_project(&name, &lang, &dir),
            };
            log.flush();
            out!("{}", out?)?;
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // Before storage is opened: a wrong certificate path fails at once.
    let tls = match &cfg.server.tls {
        Some(files) => Some(wharf::tls::Tls::load(files).await?),
        None => None,
    };
    let (registry, admin, listener) = wharf::app::start(&cfg).await?;
    let housekeeping = wharf::app::housekeeping(admin, &cfg);
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %cfg.storage.data_dir.display(),
        tls = tls.is_some(),
        "wharf is serving the registry API"
    );
    let peers = match (cfg.cluster.peer_listen, registry.cluster()) {
        (Some(addr), Some(cluster)) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on cluster.peer_listen {addr}"))?;
            tracing::info!(listen = %addr, advertise = %cluster.advertise(), "serving the other replicas");
            Some(tokio::spawn(wharf::server::peer::serve(
                registry.clone(),
                l,
                wharf::server::shutdown_signal(),
            )))
        }
        _ => None,
    };
    wharf::server::serve_with(
        registry,
        listener,
        tls,
        wharf::server::shutdown_signal(),
        &cfg.server,
    )
    .await;
    if let Some(p) = peers {
        p.abort();
    }
    housekeeping.stop().await;
    Ok(())
}

/// Export, import and warm-up may run a whole wharf in this process (when none serves the data
/// directory): the server's runtime, not a single thread.
fn archive_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_archive_report(r: &wharf::archive::Report, verb: &str, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?)?;
        return Ok(());
    }
    outln!("{verb} {} ({})", r.image, r.digest)?;
    if let Some(orig) = &r.reduced_from {
        outln!("  reduced from {orig}")?;
    }
    outln!(
        "  platforms: {}",
        if r.platforms.is_empty() {
            "-".to_owned()
        } else {
            r.platforms.join(", ")
        }
    )?;
    match &r.image_id {
        // A docker archive: what `docker load` will call it.
        Some(id) => {
            outln!(
                "  docker image {id}, {}",
                match &r.repo_tag {
                    Some(t) => format!("tagged {t}"),
                    None => "untagged (a digest reference has no tag)".to_owned(),
                }
            )?;
            outln!("  {} blobs, {}", r.blobs, human_bytes(r.bytes))?;
        }
        None => outln!(
            "  {} manifests, {} blobs, {}",
            r.manifests,
            r.blobs,
            human_bytes(r.bytes)
        )?,
    }
    for l in &r.left_out {
        outln!("  left out: {l}")?;
    }
    Ok(())
}

fn local_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn gc_text(r: &wharf_storage::gc::Report) -> String {
    use std::fmt::Write as _;
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for e in &r.evicted {
        let _ = writeln!(
            out,
            "{} tag {}:{} ({}; cache quota)",
            if r.dry_run { "would evict" } else { "evicted" },
            e.repository,
            e.tag,
            e.digest
        );
    }
    for x in &r.removed {
        let _ = writeln!(out, "{verb} {} ({})", x.digest, human_bytes(x.size));
    }
    if let Some(note) = &r.note {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "{verb} {} of {} stored ({}); {} reachable from tags, leases and recent use; {} spared as \
         they were used while it ran; {} ms",
        r.removed.len(),
        r.contents,
        human_bytes(r.removed_bytes),
        r.reachable,
        r.protected,
        r.millis
    );
    out
}

fn fsck_text(r: &wharf_storage::scrub::Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for d in &r.damaged {
        let used = match d.repositories.as_slice() {
            [] => "no repository refers to it".to_owned(),
            repos => format!("referenced by {}", repos.join(", ")),
        };
        let fate = match &d.quarantined {
            Some(to) => format!("quarantined to {to}"),
            None => "gone from the store before it could be moved (collected meanwhile)".to_owned(),
        };
        let _ = writeln!(
            out,
            "damaged {} ({}): its bytes hash to {}; {used}; {fate}",
            d.digest,
            human_bytes(d.size),
            d.actual
        );
    }
    for p in &r.problems {
        let _ = writeln!(out, "missing: {p}");
    }
    if let Some(after) = &r.resumed_after {
        let _ = writeln!(out, "note: went on from a pass that stopped after {after}");
    }
    let rate = match r.max_bytes_per_sec {
        0 => String::new(),
        n => format!(", at most {}/s", human_bytes(n)),
    };
    let _ = writeln!(
        out,
        "verified {} of {} stored ({}{rate}) in {} ms; {} damaged, {} records without their content",
        r.verified,
        r.contents,
        human_bytes(r.verified_bytes),
        r.millis,
        r.damaged.len(),
        r.problems.len()
    );
    out
}

fn pushes_text(list: &[wharf::push::DeliveryStatus]) -> String {
    use std::fmt::Write as _;
    if list.is_empty() {
        return "no deliveries\n".into();
    }
    let short = |d: &wharf_model::digest::Digest| {
        let s = d.to_string();
        s.get(..19).unwrap_or(&s).to_owned()
    };
    let mut out = format!(
        "{:>4}  {:<10}  {:<30}  {:<40}  {:>8}  DETAIL\n",
        "ID", "STATE", "PUSHED", "DELIVERED TO", "ATTEMPTS"
    );
    for p in list {
        let state = serde_json::to_value(p.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let to = format!("{}/{}:{}", p.target, p.upstream_repository, p.reference);
        let mut detail = Vec::new();
        if let Some(u) = &p.upstream_digest {
            if *u != p.digest {
                detail.push(format!("{} → {}", short(&p.digest), short(u)));
            }
        }
        if let Some(pl) = &p.platforms {
            detail.push(format!("platforms {}", pl.join(", ")));
        }
        if let Some(e) = &p.last_error {
            detail.push(format!("last error: {e}"));
        }
        let _ = writeln!(
            out,
            "{:>4}  {:<10}  {:<30}  {:<40}  {:>8}  {}",
            p.id,
            state,
            format!("{}:{}", p.repository, p.reference),
            to,
            p.attempts,
            detail.join("; ")
        );
    }
    out
}

fn leases_text(list: &[wharf::admin::LeaseEntry]) -> String {
    use std::fmt::Write as _;
    if list.is_empty() {
        return "no leases\n".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = format!(
        "{:<32}  {:>10}  {:>7}  PURPOSE\n",
        "ID", "EXPIRES IN", "DIGESTS"
    );
    for l in list {
        let _ = writeln!(
            out,
            "{:<32}  {:>9}s  {:>7}  {}",
            l.id,
            l.record.expires.saturating_sub(now),
            l.record.digests.len(),
            l.record.purpose
        );
    }
    out
}

fn images_text(list: &[wharf_storage::images::Image]) -> String {
    use std::fmt::Write as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Written as `wharf status` and the status page write it.
    let ago = |t: Option<u64>| wharf::status::last_use(now, t);
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|i| {
            let mut platforms = i.platforms.join(",");
            if i.platforms_absent > 0 {
                let _ = write!(platforms, " (+{} not here)", i.platforms_absent);
            }
            [
                i.repository.clone(),
                i.tag.clone().unwrap_or_else(|| "<none>".into()),
                i.digest.hex()[..12].to_owned(),
                if platforms.is_empty() {
                    "-".into()
                } else {
                    platforms
                },
                human_bytes(i.size),
                ago(i.last_used),
                i.provenance.join("; "),
            ]
        })
        .collect();
    let head = [
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "PLATFORMS",
        "SIZE",
        "LAST USED",
        "PROVENANCE",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = width[i]);
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(head.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
