//! The `distsync` binary: every service, the local launcher, the simulators and the clients.

mod bench;
mod cache;
mod cli;
mod demo;
mod lock_cmd;
mod probe;
mod queue;
mod serve;
mod sim;
mod up;

use clap::Parser;
use cli::{Cli, Command};

// Every request of every service allocates (JSON bodies, Redis replies, Raft batches), and on
// the queue's publish path glibc's malloc and free took a quarter of the node's CPU; mimalloc's
// per-thread free lists cut that without touching the code that allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Flags override the environment, which overrides `.env`: load `.env` before parsing.
    dotenvy::dotenv().ok();
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_format);
    match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Up(args) => up::run(args),
        Command::Lock(args) => lock_cmd::run_lock(args),
        Command::Cluster(args) => lock_cmd::run_cluster(args),
        Command::Bench(args) => bench::run(args),
        Command::Queue(cmd) => queue::cmd::run(cmd),
        Command::Cache(cmd) => cache::cmd::run(cmd),
        Command::Probe(args) => probe::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

fn init_tracing(filter: &str, format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Pretty => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
