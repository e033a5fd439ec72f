//! `blinkchamber config check|print`.

use std::path::PathBuf;

use clap::Subcommand;

use super::ConfigArg;
use crate::config::Config;

/// `config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate FILE (with environment overrides applied); exits non-zero on the first error.
    Check {
        /// The YAML file.
        file: PathBuf,
    },
    /// Print the effective configuration as YAML, every secret value redacted.
    Print(ConfigArg),
}

pub(super) fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check { file } => {
            Config::load(Some(&file))?;
            println!("{}: ok", file.display());
        }
        ConfigCommand::Print(arg) => {
            let config = Config::load(arg.config.as_deref())?;
            print!("{}", serde_saphyr::to_string(&config.redacted())?);
        }
    }
    Ok(())
}
