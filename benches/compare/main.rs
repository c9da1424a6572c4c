//! Side-by-side load benchmark: pgbench against a direct connection, PgBouncer and tidepool,
//! interleaved (A B C A B C …) so that drift on a shared machine hits all three alike.
//!
//! `cargo bench --bench compare -- --help` lists the options; docs/BENCHMARKS.md explains the
//! method and holds the results. Under `cargo test` (no `--bench` argument) it does nothing.

mod idle;
mod instructions;
mod pgbench;
mod report;
mod targets;

use pgbench::{Protocol, RunResult, Workload};
use std::path::{Path, PathBuf};
use std::time::Duration;
use targets::{Bench, Target};

/// What to run; every field has a command-line flag.
#[derive(Debug, Clone)]
pub struct Options {
    pub runs: usize,
    pub duration: Duration,
    pub clients: Vec<usize>,
    pub workloads: Vec<Workload>,
    pub protocols: Vec<Protocol>,
    pub pool_size: usize,
    pub scale: u32,
    pub idle_clients: usize,
    pub callgrind_transactions: usize,
    /// The pgbench matrix (off with `--only` lists that leave it out).
    pub matrix: bool,
    pub split: bool,
    /// `--pgbouncer`; `None`: the 1.25 build in `../shared/tools/pgbouncer/`, else Debian's.
    pub pgbouncer: Option<PathBuf>,
    /// `--tidepool`; by default the release binary cargo built with this benchmark.
    pub tidepool: PathBuf,
    pub out: PathBuf,
}

/// PgBouncer 1.25.2 built from its tag, next to the worktrees (see its README).
const SHARED_PGBOUNCER: &str = "../shared/tools/pgbouncer/pgbouncer";
const DEBIAN_PGBOUNCER: &str = "/usr/sbin/pgbouncer";

impl Options {
    /// The PgBouncer to compare with: `--pgbouncer`, else the shared 1.25 build, else Debian's.
    pub fn pgbouncer_binary(&self) -> PathBuf {
        if let Some(path) = &self.pgbouncer {
            return path.clone();
        }
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHARED_PGBOUNCER);
        if shared.exists() {
            return shared;
        }
        eprintln!(
            "compare: note: no PgBouncer at {}; using {DEBIAN_PGBOUNCER} (Debian's, 1.18: no \
             prepared statements in transaction mode, slower than 1.25)",
            shared.display()
        );
        PathBuf::from(DEBIAN_PGBOUNCER)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runs: 3,
            duration: Duration::from_secs(10),
            clients: vec![16, 64, 256],
            workloads: vec![Workload::SelectOnly, Workload::TpcbLike],
            protocols: vec![Protocol::Simple, Protocol::Extended, Protocol::Prepared],
            pool_size: 20,
            scale: 10,
            idle_clients: 10_000,
            callgrind_transactions: 20_000,
            matrix: true,
            split: true,
            pgbouncer: None,
            tidepool: PathBuf::from(env!("CARGO_BIN_EXE_tidepool")),
            out: PathBuf::from("target/benchmarks/compare.md"),
        }
    }
}

const HELP: &str = "\
compare: pgbench through direct / PgBouncer / tidepool, interleaved

  --runs N             runs per cell; the report quotes medians (default 3)
  --duration SECS      seconds per pgbench run (default 10)
  --clients LIST       client counts, e.g. 16,64,256 (default)
  --workloads LIST     select,tpcb (default both)
  --protocols LIST     simple,extended,prepared (default all)
  --pool-size N        server connections per pooler (default 20)
  --scale N            pgbench scale factor (default 10)
  --idle N             idle connections for the memory test, 0 = skip (default 10000)
  --callgrind N        transactions for instructions per query (simple and extended
                       protocol), 0 = skip (default 20000)
  --no-split           skip the read/write-split run
  --only LIST          run only these parts: matrix,split,idle,instructions; e.g.
                       `--only instructions,idle` for the two deterministic measurements
  --quick              1 run of 5 s, 16 and 64 clients, 5000 callgrind (idle stays 10000)
  --pgbouncer PATH     PgBouncer binary or wrapper (default ../shared/tools/pgbouncer/pgbouncer
                       from the repository root, PgBouncer 1.25.2; else /usr/sbin/pgbouncer)
  --tidepool PATH      tidepool binary (default: the release build of this checkout)
  --out PATH           markdown report (default target/benchmarks/compare.md)
";

/// The parts of a run `--only` can pick.
const PARTS: [&str; 4] = ["matrix", "split", "idle", "instructions"];

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    let list = |v: Option<&String>, name: &str| v.cloned().ok_or_else(|| format!("{name} needs a value"));
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {}
            "--runs" => options.runs = number(&list(it.next(), arg)?)?,
            "--duration" => options.duration = Duration::from_secs(number(&list(it.next(), arg)?)? as u64),
            "--clients" => {
                options.clients = list(it.next(), arg)?
                    .split(',')
                    .map(number)
                    .collect::<Result<_, _>>()?
            }
            "--workloads" => {
                options.workloads = list(it.next(), arg)?
                    .split(',')
                    .map(Workload::parse)
                    .collect::<Result<_, _>>()?
            }
            "--protocols" => {
                options.protocols = list(it.next(), arg)?
                    .split(',')
                    .map(Protocol::parse)
                    .collect::<Result<_, _>>()?
            }
            "--pool-size" => options.pool_size = number(&list(it.next(), arg)?)?,
            "--scale" => options.scale = number(&list(it.next(), arg)?)? as u32,
            "--idle" => options.idle_clients = number(&list(it.next(), arg)?)?,
            "--callgrind" => options.callgrind_transactions = number(&list(it.next(), arg)?)?,
            "--no-split" => options.split = false,
            "--only" => {
                let parts: Vec<String> = list(it.next(), arg)?
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .collect();
                if let Some(bad) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    return Err(format!("--only: unknown part {bad} ({})", PARTS.join(", ")));
                }
                only = Some(parts);
            }
            "--quick" => {
                options.runs = 1;
                options.duration = Duration::from_secs(5);
                options.clients = vec![16, 64];
                options.callgrind_transactions = 5_000;
            }
            "--pgbouncer" => options.pgbouncer = Some(PathBuf::from(list(it.next(), arg)?)),
            "--tidepool" => options.tidepool = PathBuf::from(list(it.next(), arg)?),
            "--out" => options.out = PathBuf::from(list(it.next(), arg)?),
            "--help" | "-h" => return Err(HELP.to_string()),
            other => return Err(format!("unknown argument {other}\n\n{HELP}")),
        }
    }
    if let Some(parts) = only {
        let wants = |part: &str| parts.iter().any(|p| p == part);
        options.matrix = wants("matrix");
        options.split = wants("split");
        if !wants("idle") {
            options.idle_clients = 0;
        }
        if !wants("instructions") {
            options.callgrind_transactions = 0;
        }
    }
    if options.runs == 0 || options.clients.is_empty() {
        return Err("--runs and --clients must not be empty".into());
    }
    Ok(options)
}

fn number(s: &str) -> Result<usize, String> {
    s.trim().parse().map_err(|_| format!("not a number: {s}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to test here.
    if !args.iter().any(|a| a == "--bench") {
        println!("compare: a load benchmark; run it with `cargo bench --bench compare`");
        return;
    }
    let options = match parse_args(&args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&options) {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn run(options: &Options) -> Result<(), String> {
    eprintln!(
        "compare: starting a primary{}, PgBouncer and tidepool",
        if options.split { " + 2 standbys" } else { "" }
    );
    let bench = Bench::start(options)?;
    eprintln!(
        "compare: {} against tidepool {}",
        bench.pgbouncer_version,
        options.tidepool.display()
    );
    let mut cells = Vec::new();
    let workloads = if options.matrix {
        &options.workloads[..]
    } else {
        &[]
    };
    for &workload in workloads {
        for &protocol in &options.protocols {
            for &clients in &options.clients {
                let targets: Vec<Target> = Target::MAIN
                    .iter()
                    .copied()
                    .filter(|t| bench.supports(*t, protocol))
                    .collect();
                let cell = measure(&bench, options, workload, protocol, clients, &targets)?;
                eprintln!("{}", report::cell_line(&cell));
                cells.push(cell);
            }
        }
    }
    let mut split = Vec::new();
    if options.split {
        for &clients in &options.clients {
            let targets = [Target::Direct, Target::Tidepool, Target::TidepoolSplit];
            let cell = measure(
                &bench,
                options,
                Workload::SelectOnly,
                Protocol::Extended,
                clients,
                &targets,
            )?;
            eprintln!("{}", report::cell_line(&cell));
            split.push(cell);
        }
    }
    let idle = if options.idle_clients > 0 {
        Some(idle::measure(&bench, options.idle_clients)?)
    } else {
        None
    };
    let instructions = if options.callgrind_transactions > 0 {
        Some(instructions::measure(&bench, options.callgrind_transactions)?)
    } else {
        None
    };
    let markdown = report::render(
        &bench,
        options,
        &cells,
        &split,
        idle.as_ref(),
        instructions.as_ref(),
    );
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&options.out, &markdown).map_err(|e| format!("{}: {e}", options.out.display()))?;
    println!("{markdown}");
    eprintln!("compare: report written to {}", options.out.display());
    Ok(())
}

/// One matrix cell: `runs` rounds, each running every target once, in turn.
pub struct Cell {
    pub workload: Workload,
    pub protocol: Protocol,
    pub clients: usize,
    pub results: Vec<(Target, Vec<RunResult>)>,
}

fn measure(
    bench: &Bench,
    options: &Options,
    workload: Workload,
    protocol: Protocol,
    clients: usize,
    targets: &[Target],
) -> Result<Cell, String> {
    let mut results: Vec<(Target, Vec<RunResult>)> = targets.iter().map(|t| (*t, Vec::new())).collect();
    for _ in 0..options.runs {
        for (target, runs) in results.iter_mut() {
            let run = pgbench::run(bench, *target, workload, protocol, clients, options.duration)?;
            runs.push(run);
        }
    }
    Ok(Cell {
        workload,
        protocol,
        clients,
        results,
    })
}
