//! The `tidepool` command: run the proxy, check a config, or start a local demo.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tidepool::config::Config;

#[derive(Parser)]
#[command(
    name = "tidepool",
    version,
    about = "PostgreSQL connection pooler and read/write load-balancing proxy"
)]
struct Cli {
    /// Configuration file (TOML) for running the proxy.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit (non-zero, naming the key, if invalid).
    Check,
    /// Start a throwaway local PostgreSQL with tidepool in front of it.
    Demo {
        /// Address for tidepool to listen on (default: a free loopback port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Streaming standbys to start beside the primary.
        #[arg(long, default_value_t = 2)]
        standbys: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEPOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidepool: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Check) => {
            let Some(path) = cli.config else {
                eprintln!("tidepool check: --config FILE is required");
                return ExitCode::from(2);
            };
            // The TLS files are read too, as a start or reload would.
            let checked = Config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|config| tidepool::tls::check(&config.tls).map_err(|e| e.to_string()));
            match checked {
                Ok(()) => {
                    println!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Demo { listen, standbys }) => {
            let options = tidepool::demo::DemoOptions { listen, standbys };
            match runtime.block_on(tidepool::demo::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tidepool demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let Some(path) = cli.config else {
                eprintln!("tidepool: --config FILE is required (or try `tidepool demo`)");
                return ExitCode::from(2);
            };
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(config))
        }
    }
}

/// Runs the proxy until SIGINT or SIGTERM.
async fn run(config: Config) -> ExitCode {
    let proxy = match tidepool::app::Proxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tidepool: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = tidepool::shutdown::stop_signal().await {
        eprintln!("tidepool: cannot listen for signals: {e}");
    }
    tracing::info!("stopping");
    proxy.shutdown().await;
    ExitCode::SUCCESS
}
