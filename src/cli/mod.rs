//! The `blinkchamber` command line: one file per subcommand, one [`Command`] enum.

mod bench;
mod config;
mod doctor;
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
    /// line, with the current span's fields such as an event's `trace_id`) for log
    /// collectors. `NO_COLOR` turns colours off in text.
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
    /// Check the backend (topology, memory, load, persistence, queues) and say what to do.
    Doctor(doctor::DoctorArgs),
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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(args) = &cli.command {
        builder.worker_threads(args.threads());
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP exporter's client runs on it.
    let telemetry = {
        let _entered = runtime.enter();
        init_logging(cli.log_format)
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Config(cmd) => config::run(cmd),
            Command::Bench(args) => bench::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Events(args) => events::run(args).await,
            Command::Doctor(args) => return doctor::run(args).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    {
        let _entered = runtime.enter();
        telemetry.flush();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What must be flushed before the process exits: the OTLP exporter's buffered spans.
struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    fn flush(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
    }
}

/// Logs to stderr at `BLINKCHAMBER_LOG` (else `RUST_LOG`, else `info`), and with the
/// `otel` feature exports spans when the environment asks for it (see
/// [`crate::telemetry`]).
fn init_logging(format: LogFormat) -> Telemetry {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("BLINKCHAMBER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let output = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(colour_wanted())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(output);
    #[cfg(feature = "otel")]
    {
        let (layer, provider) = match crate::telemetry::otlp_layer() {
            Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
            Ok(None) => (None, None),
            Err(e) => {
                eprintln!("warning: OpenTelemetry export is off: {e}");
                (None, None)
            }
        };
        let _ = registry.with(layer).try_init();
        Telemetry { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        Telemetry {}
    }
}

/// Colours only on a terminal, and never with `NO_COLOR` set to anything but empty
/// (no-color.org).
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::IsTerminal::is_terminal(&std::io::stderr())
}
