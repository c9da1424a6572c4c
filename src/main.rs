//! The `tidepool` command: run the proxy, check a config, or start a local demo.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tidepool::config::{Config, LogFormat};
use tidepool::shutdown::{Stage, StopSignal, StopSignals};

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
    // Running from a config: its log settings apply, so load it before logging starts.
    let loaded = match (&cli.command, &cli.config) {
        (None, Some(path)) => Some(Config::load(path)),
        _ => None,
    };
    match &loaded {
        Some(Ok(config)) => init_logging(config.proxy.log_format, &config.proxy.log_level),
        _ => init_logging(LogFormat::Text, "info"),
    }

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
            // The files [auth] and [tls] name are part of the configuration: a bad line or
            // certificate fails the check, as it would fail a start or reload.
            let checked = Config::load(&path).map_err(|e| e.to_string()).and_then(|config| {
                tidepool::client::auth::UserDirectory::check_files(&config).map_err(|e| e.to_string())?;
                tidepool::tls::check(&config.tls).map_err(|e| e.to_string())
            });
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
            let config = match loaded {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                None => unreachable!("loaded above when running from a config"),
            };
            runtime.block_on(run(config, path))
        }
    }
}

/// Logs to stderr; `TIDEPOOL_LOG` or `RUST_LOG` (a tracing filter) wins over the config's level.
fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TIDEPOOL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// Runs the proxy: SIGHUP reloads `path`; SIGTERM (or admin `SHUTDOWN WAIT_FOR_SERVERS`) stops
/// gracefully and SIGINT (or plain `SHUTDOWN`) fast, both within `proxy.shutdown_timeout`;
/// `SHUTDOWN WAIT_FOR_CLIENTS` waits, without a deadline, for the clients to leave. A further
/// signal speeds the stop up one stage, or exits at once when it is already fast or graceful.
async fn run(config: Config, path: PathBuf) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before listening, so that an early signal is not fatal.
    let (mut stops, mut hangups) = match (StopSignals::install(), signal(SignalKind::hangup())) {
        (Ok(stops), Ok(hangups)) => (stops, hangups),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tidepool: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let proxy = match tidepool::app::Proxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tidepool: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = proxy.shared().clone();
    shared.set_config_path(path);
    let reloader = shared.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            // Logged by reload itself, success or not.
            let _ = tidepool::reload::reload(&reloader).await;
        }
    });

    tokio::select! {
        signal = stops.recv() => escalate(&shared.shutdown, signal),
        // Admin SHUTDOWN, any mode.
        _ = shared.shutdown.reached(Stage::DrainClients) => {}
    }
    if shared.shutdown.stage() == Stage::DrainClients {
        tracing::info!(
            clients = shared.clients.app_connections(),
            "stopping: no new connections; waiting for every client to disconnect"
        );
        tokio::select! {
            _ = proxy.clients_gone() => tracing::info!("every client has disconnected"),
            // A faster SHUTDOWN from the console.
            _ = shared.shutdown.wait() => {}
            signal = stops.recv() => escalate(&shared.shutdown, signal),
        }
    }
    let timeout = shared.snapshot().config.proxy.shutdown_timeout.0;
    let fast = shared.shutdown.stage() == Stage::Fast;
    tracing::info!(fast, timeout = ?timeout, "stopping: closing clients at their next idle point");
    let drain = proxy.shutdown_within(timeout);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            _ = &mut drain => {
                tracing::info!("stopped");
                return ExitCode::SUCCESS;
            }
            signal = stops.recv() => {
                if signal == StopSignal::Interrupt && shared.shutdown.stage() < Stage::Fast {
                    tracing::info!("SIGINT: speeding up the shutdown");
                    shared.shutdown.trigger_fast();
                    continue;
                }
                tracing::warn!(clients = shared.clients.current(), "second stop signal: exiting now");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// What a stop signal asks for: SIGTERM a graceful stop, SIGINT a fast one (never slower than
/// the stop already under way).
fn escalate(shutdown: &tidepool::shutdown::Shutdown, signal: StopSignal) {
    match signal {
        StopSignal::Terminate => shutdown.trigger(),
        StopSignal::Interrupt => shutdown.trigger_fast(),
    }
}
