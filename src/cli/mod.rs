//! The `blinkchamber` command line: one file per subcommand, one [`Command`] enum.

mod bench;
mod config;
mod events;
mod serve;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Redis-backed platform runtime: cache, sessions, tokens, rate limits, locks and events.
#[derive(Parser, Debug)]
#[command(name = "blinkchamber", version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP API (and `/metrics` on its own listener).
    Serve(serve::ServeArgs),
    /// Validate or print configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Measure capabilities against raw Redis commands in the same run.
    Bench(bench::BenchArgs),
    /// Consume the event queues (log and webhook sinks), with `/metrics`.
    Worker(worker::WorkerArgs),
    /// Inspect the event queues and operate the dead-letter list (Redis).
    Events(events::EventsArgs),
}

/// `--config FILE`, shared by subcommands that read configuration.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// YAML configuration file; `BLINKCHAMBER_…` variables override its keys.
    #[arg(long, short = 'c', env = "BLINKCHAMBER_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Parses arguments, runs the subcommand and maps failure to a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Config(cmd) => config::run(cmd),
            Command::Bench(args) => bench::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Events(args) => events::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BLINKCHAMBER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
