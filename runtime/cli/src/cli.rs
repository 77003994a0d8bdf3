//! The `squall` command line, as a library: a user's own binary calls [`main`] with its
//! [`Registry`] and is the whole product (local runs, validation, benchmarks).
//!
//! Contract: every verb exits 0 on success; on failure it prints a clear one-line error
//! (`error: …`) to stderr — or, for `validate`, every mistake in the file, one per line — and
//! exits non-zero. Human output goes to stderr while a run is live; stdout carries the end
//! result (a table, or JSON with `--json`), so it can be piped; a reader that goes away
//! (`| head -1`) ends any verb quietly, with status 0 (see [`crate::broken_pipe`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use squall_api::Registry;

use squall_engine::local::{self, LocalOptions};
use squall_engine::topology;

use crate::bench;
#[cfg(feature = "cluster")]
use crate::cluster_verbs;
use crate::kinds;
use crate::state;
use crate::topic;

#[derive(Parser, Debug)]
#[command(
    name = "squall",
    version,
    about = "Squall: record-at-a-time stream processing, in the tradition of Apache Storm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a topology in this process, with live progress; ends by itself when its spouts
    /// are finished, after --for, or on Ctrl-C
    Local {
        /// The topology file (TOML)
        file: PathBuf,
        /// Stop after this long, e.g. 30s, 5m
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Print the end-of-run summary as JSON on stdout
        #[arg(long)]
        json: bool,
        /// The embedded log's directory, for components with `broker = "embedded"`
        /// [default: $SQUALL_DATA_DIR, else ./squall-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Serve the web UI, REST API and /metrics of this run on ADDR (host:port, as nimbus's
        /// [ui] listen); actions need $SQUALL_SECRET, else a secret printed at start
        #[arg(long, value_name = "ADDR")]
        ui: Option<String>,
    },
    /// Check a topology file and print every mistake with file:line:col
    Validate {
        /// The topology file (TOML)
        file: PathBuf,
        /// Print the topology's layout as JSON (what `submit` asks of an --artifact)
        #[arg(long, hide = true)]
        layout: bool,
    },
    /// List the component kinds this binary knows; with KIND, its config keys and defaults,
    /// and the fields it emits
    Kinds {
        /// One kind to describe in full
        kind: Option<String>,
    },
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    Cluster(cluster_verbs::ClusterCommand),
    /// A running topology's errors: per component its count and each task's latest, with
    /// time and worker
    #[cfg(feature = "cluster")]
    Errors(crate::errors::ErrorsArgs),
    /// A live view of a running topology in the terminal (a cluster's, or a local run's with
    /// --ui): per component its rate, acks, failures, capacity and latency; q quits
    #[cfg(feature = "cluster")]
    Top(crate::top::TopArgs),
    /// Live tuples sampled from what a running component emits, as JSON lines (a cluster's,
    /// or a local run's with --ui)
    #[cfg(feature = "cluster")]
    Tap(crate::tap::TapArgs),
    /// Serve the embedded log over TCP
    Broker(topic::BrokerArgs),
    /// Create, fill, read and describe the log's topics
    Topic {
        #[command(subcommand)]
        verb: topic::TopicCommand,
    },
    /// Read stateful components' checkpointed state
    State {
        #[command(subcommand)]
        verb: state::StateCommand,
    },
    /// Run a benchmark workload and print its result line
    Bench {
        #[command(subcommand)]
        workload: Workload,
    },
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// WC-1: word count over N sentences, flat out
    Wc1 {
        /// Sentences
        #[arg(long, default_value_t = 10_000_000)]
        n: u64,
        /// Parallelism of split and count
        #[arg(long, default_value_t = 2)]
        p: usize,
        #[arg(long, value_enum, default_value_t = OnOff::On)]
        acking: OnOff,
        /// Worker processes
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// The split bolt: Rust, or pystorm through shell-bolt (`$SQUALL_PYTHON`, else python3)
        #[arg(long, value_enum, default_value_t = SplitIn::Rust)]
        split: SplitIn,
    },
    /// LAT-1: complete latency of word count at a fixed sentence rate
    Lat1 {
        /// Sentences per second
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Parallelism of split and count
        #[arg(long, default_value_t = 2)]
        p: usize,
        /// Worker processes
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Measured seconds, after a 5 s warm-up
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// LOG-1: broker to broker with acking on, M records of 100 bytes
    Log1 {
        /// Records
        #[arg(long, default_value_t = 1_000_000)]
        m: u64,
        /// Worker processes
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// The broker the records go through
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "kafka"])]
        broker: String,
        /// With --broker kafka: a Kafka cluster to use [default: $KAFKA_BOOTSTRAP, else a
        /// Tansu broker started for the run]
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: Option<String>,
    },
    /// STATE-1: M records of a topic counted into checkpointed state (log backend)
    State1 {
        /// Records
        #[arg(long, default_value_t = 1_000_000)]
        m: u64,
        /// What the counts promise
        #[arg(long, default_value = "exactly_once", value_parser = ["at_least_once", "exactly_once"])]
        guarantee: String,
        /// Worker processes
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// WIN-1: N events counted per key on 1 s event-time windows
    Win1 {
        /// Events
        #[arg(long, default_value_t = 10_000_000)]
        n: u64,
        /// Parallelism of the windowed count
        #[arg(long, default_value_t = 2)]
        p: usize,
        /// Keys
        #[arg(long, default_value_t = 1000)]
        k: u64,
        /// Worker processes
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

/// The language of WC-1's split bolt.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SplitIn {
    Rust,
    Python,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))
}

/// Runs the CLI with the component kinds of `registry`; returns the process exit code.
pub fn main(registry: Registry) -> ExitCode {
    crate::broken_pipe::exit_quietly_when_stdout_closes();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(cli, registry))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// A command line clap refused, as one line (`error: …; usage: …`) and exit status 2; help
/// and version requests print as clap has them.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(e.exit_code() as u8);
    }
    let text = e.render().to_string();
    let mut line = String::new();
    for part in
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more information"))
    {
        if let Some(usage) = part.strip_prefix("Usage: ") {
            line.push_str(&format!("; usage: {usage}"));
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(part);
        }
    }
    eprintln!("{line} (see --help)");
    ExitCode::from(2)
}

fn done(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Binds `squall local --ui ADDR` and says where it listens; the UI is served once the run
/// has started.
#[cfg(feature = "ui")]
async fn local_ui(addr: &str) -> Result<impl FnOnce(local::Started), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--ui cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("--ui cannot listen on {addr}: {e}"))?;
    let secret = match std::env::var("SQUALL_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => {
            let s = format!("{:016x}", fastrand::u64(..));
            eprintln!("the ui's actions need the secret {s} (or set SQUALL_SECRET)");
            s
        }
    };
    eprintln!("ui listening on http://{bound}/");
    Ok(squall_ui::local::serve_when_started(listener, squall_ui::UiOptions { secret, public_read: true }))
}

/// Without the `ui` feature, `--ui` is refused.
#[cfg(not(feature = "ui"))]
async fn local_ui(_addr: &str) -> Result<fn(local::Started), String> {
    Err("this squall was built without the web UI (feature `ui`)".into())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Every mistake of a topology file, then a one-line verdict.
fn report_mistakes(file: &std::path::Path, diagnostics: &topology::Diagnostics) -> ExitCode {
    eprintln!("{diagnostics}");
    let n = diagnostics.0.len();
    fail(&format!("{} has {n} mistake{}", file.display(), if n == 1 { "" } else { "s" }))
}

async fn run(cli: Cli, registry: Registry) -> ExitCode {
    match cli.command {
        Command::Validate { file, layout: true } => match topology::load(&file, &registry) {
            #[cfg(feature = "cluster")]
            Ok(def) => done(cluster_verbs::print_layout(&def)),
            #[cfg(not(feature = "cluster"))]
            Ok(_) => {
                fail("--layout is for `squall submit`, and this build has no cluster (feature `cluster`)")
            }
            Err(diagnostics) => report_mistakes(&file, &diagnostics),
        },
        Command::Validate { file, layout: false } => match topology::load(&file, &registry) {
            Ok(def) => {
                let tasks: usize = def.components().map(|c| c.parallelism).sum();
                println!(
                    "{}: ok: topology {} with {} spouts, {} bolts, {} tasks",
                    file.display(),
                    def.name,
                    def.spouts.len(),
                    def.bolts.len(),
                    tasks
                );
                ExitCode::SUCCESS
            }
            Err(diagnostics) => report_mistakes(&file, &diagnostics),
        },
        Command::Local { file, duration, json, data_dir, ui } => {
            if let Some(dir) = data_dir {
                squall_broker::set_data_dir(dir);
            }
            let def = match topology::load(&file, &registry) {
                Ok(def) => def,
                Err(diagnostics) => return report_mistakes(&file, &diagnostics),
            };
            let resources = squall_engine::resources::beside(&file);
            let opts = LocalOptions { duration, progress: true, resources };
            let run = match ui {
                None => local::run(&def, &registry, &opts).await,
                Some(addr) => match local_ui(&addr).await {
                    Ok(on_start) => local::run_observed(&def, &registry, &opts, on_start).await,
                    Err(e) => return fail(&e),
                },
            };
            match run {
                Ok(result) => {
                    if json {
                        match serde_json::to_string(&result.snapshot) {
                            Ok(text) => println!("{text}"),
                            Err(e) => return fail(&format!("cannot encode the summary: {e}")),
                        }
                    } else {
                        print!("{}", result.snapshot.render_table(&result.plan));
                        println!(
                            "topology {} ran {:.1}s{}",
                            def.name,
                            result.elapsed.as_secs_f64(),
                            if result.stopped { " (stopped)" } else { "" }
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Kinds { kind: None } => {
            print!("{}", kinds::list(&registry));
            ExitCode::SUCCESS
        }
        Command::Kinds { kind: Some(kind) } => match kinds::describe(&registry, &kind) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        #[cfg(feature = "cluster")]
        Command::Cluster(command) => done(cluster_verbs::run(command, registry).await),
        #[cfg(feature = "cluster")]
        Command::Errors(args) => done(crate::errors::run(args).await),
        #[cfg(feature = "cluster")]
        Command::Top(args) => done(crate::top::run(args).await),
        #[cfg(feature = "cluster")]
        Command::Tap(args) => done(crate::tap::run(args).await),
        Command::Broker(args) => done(topic::broker(args).await),
        Command::Topic { verb } => done(topic::topic(verb).await),
        Command::State { verb } => done(state::state(verb, &registry).await),
        Command::Bench { workload } => {
            let line = match workload {
                Workload::Wc1 { n, p, acking, workers, split } => {
                    let python_split = split == SplitIn::Python;
                    bench::wc1(&bench::Wc1 { n, p, acking: acking == OnOff::On, workers, python_split }).await
                }
                Workload::Lat1 { rate, p, workers, seconds } => {
                    bench::lat1(&bench::Lat1 { rate, p, workers, seconds, warmup: 5 }).await
                }
                Workload::Log1 { m, workers, broker, bootstrap } => {
                    bench::log1(&bench::Log1 { m, workers, broker, bootstrap }).await
                }
                Workload::Win1 { n, p, k, workers } => bench::win1(&bench::Win1 { n, p, k, workers }).await,
                Workload::State1 { m, guarantee, workers } => {
                    let guarantee = match guarantee.as_str() {
                        "at_least_once" => squall_api::Guarantee::AtLeastOnce,
                        _ => squall_api::Guarantee::ExactlyOnce,
                    };
                    bench::state1(&bench::State1 { m, guarantee, workers }).await
                }
            };
            match line {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
    }
}
