use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use wharf::config::Config;

/// A registry-protocol proxy for container images.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One line per request: batched, so logging costs a copy rather than a syscall per request.
    let writer = wharf::logbuf::BatchedWriter::new(std::io::stderr());
    let log = writer.flusher();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
        Command::Config { config } => {
            let cfg = Config::load(config.as_deref())?;
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let (registry, listener) = wharf::server::start(&cfg).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %cfg.storage.data_dir.display(),
        "wharf is serving the registry API"
    );
    wharf::server::serve(
        registry,
        listener,
        wharf::server::shutdown_signal(),
        &cfg.server,
    )
    .await;
    Ok(())
}
