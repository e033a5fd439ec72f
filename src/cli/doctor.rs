//! `blinkchamber doctor`: read-only checks of the configured backend, one line each, with
//! the next step for anything that is not a pass.

use std::io::Write;
use std::process::ExitCode;

use super::ConfigArg;
use crate::config::Config;
use crate::doctor::{self, Group};

/// Arguments of `doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    json: bool,
    /// Run only these groups (comma-separated).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Group>,
}

/// Exit code 0 when nothing fails, 1 on a failure, 2 when the backend cannot be reached.
pub(super) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.config.as_deref())?;
    let report = doctor::run(&config, &args.only).await;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.text()
    };
    // A closed pipe (`doctor | head`) is not an error of the checks.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    Ok(ExitCode::from(report.exit_code()))
}
