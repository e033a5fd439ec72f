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
    /// How log lines are written to stderr: `text` for people, `json` (one object per
    /// line, with the span fields such as `request_id`) for log collectors. `NO_COLOR`
    /// turns colours off in text.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "BLINKCHAMBER_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
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
    init_logging(cli.log_format);
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

/// Logs to stderr at `BLINKCHAMBER_LOG` (else `RUST_LOG`, else `info`).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BLINKCHAMBER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(colour_wanted()).try_init(),
    };
}

/// Colours only on a terminal, and never with `NO_COLOR` set to anything but empty
/// (no-color.org).
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::IsTerminal::is_terminal(&std::io::stderr())
}
