//! The `tidepool` command: run the proxy, check a config, import a PgBouncer one, probe a
//! running tidepool's health, or start a local demo.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tidepool::app::Shared;
use tidepool::config::{Config, LogFormat};
use tidepool::shutdown::{on_signal, SignalAction, Stage, StopSignal, StopSignals};
use tokio::signal::unix::{signal, Signal, SignalKind};

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
    /// Write an equivalent pool.toml for a PgBouncer configuration; every key that could not
    /// be mapped is listed (on stderr and atop the file) with the reason.
    ImportPgbouncer {
        /// The pgbouncer.ini to read.
        ini: PathBuf,
        /// Where to write pool.toml (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Probe a running tidepool (for Docker's HEALTHCHECK): its `/readyz` when the config has
    /// `[metrics] listen`, else its client port; exit 0 when healthy, 1 when not.
    Health {
        /// Probe this URL instead (`http://host:port/path`).
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
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
                tidepool::auth::UserDirectory::check_files(&config).map_err(|e| e.to_string())?;
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
        Some(Command::ImportPgbouncer { ini, output }) => import_pgbouncer(&ini, output.as_deref()),
        Some(Command::Health { url, timeout }) => {
            runtime.block_on(health(cli.config.as_deref(), url.as_deref(), timeout))
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

/// `tidepool health`: probes what the config (or `--url`) names.
async fn health(config: Option<&std::path::Path>, url: Option<&str>, timeout: u64) -> ExitCode {
    use tidepool::health_command::{check, Target};
    let target = match (url, config) {
        (Some(url), _) => Target::from_url(url).map_err(|e| e.to_string()),
        (None, Some(path)) => Config::load(path)
            .map(|c| Target::from_config(&c))
            .map_err(|e| format!("{}: {e}", path.display())),
        (None, None) => Err("--config FILE or --url URL is required".to_string()),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tidepool health: {e}");
            return ExitCode::from(2);
        }
    };
    match check(&target, std::time::Duration::from_secs(timeout)).await {
        Ok(what) => {
            println!("healthy: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tidepool import-pgbouncer`: the TOML to `output` or stdout, what was not mapped to stderr.
fn import_pgbouncer(ini: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
    let imported = match tidepool::import::import(ini) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("tidepool import-pgbouncer: {e}");
            return ExitCode::FAILURE;
        }
    };
    for u in &imported.unmapped {
        eprintln!("not mapped: {} (line {}): {}", u.key, u.line, u.reason);
    }
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("tidepool import-pgbouncer: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!(
                "wrote {} ({} keys not mapped)",
                path.display(),
                imported.unmapped.len()
            );
        }
        None => print!("{}", imported.toml),
    }
    ExitCode::SUCCESS
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

/// Runs the proxy. Signals as PgBouncer 1.23+ defines them: SIGHUP reloads `path`, SIGUSR1
/// pauses and SIGUSR2 resumes every pool; SIGTERM stops accepting and waits for the clients to
/// leave (as `SHUTDOWN WAIT_FOR_CLIENTS`; `proxy.sigterm_timeout` may bound that), SIGINT
/// stops gracefully (`SHUTDOWN WAIT_FOR_SERVERS`) and SIGQUIT fast (`SHUTDOWN`), both within
/// `proxy.shutdown_timeout`. A second stop signal is an immediate stop (fast); one during a
/// fast stop exits at once.
async fn run(config: Config, path: PathBuf) -> ExitCode {
    // Installed before listening, so that an early signal is not fatal.
    let (mut stops, controls) = match (StopSignals::install(), ControlSignals::install()) {
        (Ok(stops), Ok(controls)) => (stops, controls),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tidepool: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    tidepool::service::check_open_files(&config);
    let proxy = match tidepool::app::Proxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tidepool: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = proxy.shared().clone();
    shared.set_config_path(path);
    tokio::spawn(controls.serve(shared.clone()));
    tidepool::service::ready();

    let mut by_sigterm = false;
    tokio::select! {
        signal = stops.recv() => {
            by_sigterm = signal == StopSignal::Terminate;
            if !apply(&shared.shutdown, signal) {
                return ExitCode::FAILURE;
            }
        }
        // Admin SHUTDOWN, any mode.
        _ = shared.shutdown.reached(Stage::DrainClients) => {}
    }
    tidepool::service::stopping();
    if shared.shutdown.stage() == Stage::DrainClients && !drain_clients(&proxy, &mut stops, by_sigterm).await
    {
        return ExitCode::FAILURE;
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
                if !apply(&shared.shutdown, signal) {
                    tracing::warn!(clients = shared.clients.current(), "second stop signal during a fast stop: exiting now");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
}

/// The drain stage (SIGTERM or `SHUTDOWN WAIT_FOR_CLIENTS`): wait until every client has left,
/// a faster stop is asked for, or (after a SIGTERM) `sigterm_timeout` runs out, which turns it
/// graceful. False when a signal says to exit now.
async fn drain_clients(proxy: &tidepool::app::Proxy, stops: &mut StopSignals, by_sigterm: bool) -> bool {
    let shared = proxy.shared();
    // Read now, so a reload before the SIGTERM applies.
    let deadline = shared.snapshot().config.proxy.sigterm_timeout.0;
    let deadline = (by_sigterm && !deadline.is_zero()).then_some(deadline);
    tracing::info!(
        clients = shared.clients.app_connections(),
        deadline = ?deadline,
        "stopping: no new connections; waiting for every client to disconnect"
    );
    let timer = async {
        match deadline {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = proxy.clients_gone() => tracing::info!("every client has disconnected"),
        // A faster SHUTDOWN from the console.
        _ = shared.shutdown.wait() => {}
        _ = timer => {
            tracing::info!("sigterm_timeout over: closing clients at their next idle point");
            shared.shutdown.trigger();
        }
        signal = stops.recv() => return apply(&shared.shutdown, signal),
    }
    true
}

/// Moves the stop on as `signal` asks ([`on_signal`]); false when the process must exit now.
fn apply(shutdown: &tidepool::shutdown::Shutdown, signal: StopSignal) -> bool {
    match on_signal(shutdown.stage(), signal) {
        SignalAction::Advance(stage) => {
            tracing::info!(signal = signal.name(), stage = ?stage, "stop signal");
            shutdown.advance(stage);
            true
        }
        SignalAction::ExitNow => false,
    }
}

/// SIGHUP, SIGUSR1 and SIGUSR2: reload, PAUSE and RESUME, as PgBouncer has them.
struct ControlSignals {
    hangup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl ControlSignals {
    fn install() -> std::io::Result<ControlSignals> {
        Ok(ControlSignals {
            hangup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn serve(mut self, shared: Arc<Shared>) {
        use tidepool::admin::actions::{pause_all, resume_all};
        loop {
            tokio::select! {
                Some(()) = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    tidepool::service::reloading();
                    // Logged by reload itself, success or not.
                    let _ = tidepool::reload::reload(&shared).await;
                    tidepool::service::ready();
                }
                Some(()) = self.usr1.recv() => {
                    tracing::info!("SIGUSR1: pausing every pool (as PAUSE)");
                    pause_all(&shared);
                }
                Some(()) = self.usr2.recv() => {
                    tracing::info!("SIGUSR2: resuming (as RESUME)");
                    resume_all(&shared);
                }
                else => return,
            }
        }
    }
}
