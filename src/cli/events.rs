//! `blinkchamber events …`: look at and operate the event queues in Redis — numbers per
//! queue, the next events of a queue, and the dead-letter list (list, show, replay,
//! delete, purge). Events are printed as JSON, one per line, for `jq`.

use std::io::Write;

use super::ConfigArg;
use crate::config::{BackendKind, Config};
use crate::events::{Priority, dead_letter};
use crate::runtime::{Capability, Runtime};

/// Arguments of `events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: EventsCommand,
}

/// `events` subcommands.
#[derive(clap::Subcommand, Debug)]
enum EventsCommand {
    /// Depth, in flight, retrying and oldest age per queue, and the dead-letter count.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The next events of a queue, next to be taken first.
    Peek {
        /// `high`, `normal`, `low` or `dead-letter`.
        queue: QueueArg,
        /// How many.
        #[arg(default_value_t = 10)]
        n: usize,
    },
    /// The dead-letter list.
    #[command(subcommand, name = "dead-letter")]
    DeadLetter(DeadLetterCommand),
}

/// A queue named on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum QueueArg {
    High,
    Normal,
    Low,
    DeadLetter,
}

/// `events dead-letter` subcommands.
#[derive(clap::Subcommand, Debug)]
enum DeadLetterCommand {
    /// Dead letters, oldest first, one JSON event per line.
    List {
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter by event id, with `attempt`, `lasterror` and `deadat`.
    Show {
        /// Event id.
        id: String,
    },
    /// Put dead letters back in their queues with attempts reset.
    Replay {
        /// Event id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete one dead letter.
    Delete {
        /// Event id.
        id: String,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

pub(super) async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.config.as_deref())?;
    if config.backend == BackendKind::Memory {
        anyhow::bail!(
            "backend: `events` reads the queues in Redis and needs `backend: redis`; the memory \
             backend's queues live inside one `serve` process (use its /v1/events routes)"
        );
    }
    let runtime = Runtime::with(&config, &[Capability::Events]).await?;
    let events = runtime
        .events()
        .ok_or(crate::RuntimeError::EventsDisabled)?;
    let queues = events.queues();
    let mut out = std::io::stdout().lock();
    match args.command {
        EventsCommand::Stats { json } => {
            let stats = queues.stats().await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                writeln!(
                    out,
                    "{:<8} {:<32} {:>10} {:>10} {:>10} {:>12}",
                    "priority", "queue", "depth", "in-flight", "retrying", "oldest age"
                )?;
                for (p, q) in Priority::ALL.into_iter().zip(&stats.queues) {
                    let age = q.oldest_age.map_or("-".into(), |s| format!("{s:.1}s"));
                    writeln!(
                        out,
                        "{:<8} {:<32} {:>10} {:>10} {:>10} {:>12}",
                        p.as_str(),
                        queues.name(p),
                        q.depth,
                        q.in_flight,
                        q.retrying,
                        age
                    )?;
                }
                writeln!(
                    out,
                    "dead letters ({}): {}",
                    config.events.queues.dead_letter, stats.dead
                )?;
            }
        }
        EventsCommand::Peek { queue, n } => {
            let priority = match queue {
                QueueArg::High => Some(Priority::High),
                QueueArg::Normal => Some(Priority::Normal),
                QueueArg::Low => Some(Priority::Low),
                QueueArg::DeadLetter => None,
            };
            for stored in queues.peek(priority, n).await? {
                writeln!(out, "{}", dead_letter::entry_json(&stored))?;
            }
        }
        EventsCommand::DeadLetter(command) => {
            let compress = config.events.publishing.compression;
            let no_such = |id: &str| anyhow::anyhow!("no dead letter with id `{id}`");
            match command {
                DeadLetterCommand::List { limit } => {
                    for entry in queues.dead_letters(limit).await? {
                        writeln!(out, "{entry}")?;
                    }
                }
                DeadLetterCommand::Show { id } => {
                    let (_, event) = queues.dead_letter(&id).await?.ok_or_else(|| no_such(&id))?;
                    writeln!(out, "{}", serde_json::to_string_pretty(&event)?)?;
                }
                DeadLetterCommand::Replay { id, all } => {
                    let router = events.router();
                    if all {
                        let n = queues.replay_all_dead_letters(router, compress).await?;
                        writeln!(out, "replayed {n}")?;
                    } else {
                        let id = id.unwrap_or_default();
                        if !queues.replay_dead_letter(&id, router, compress).await? {
                            return Err(no_such(&id));
                        }
                        writeln!(out, "replayed 1")?;
                    }
                }
                DeadLetterCommand::Delete { id } => {
                    if !queues.delete_dead_letter(&id).await? {
                        return Err(no_such(&id));
                    }
                    writeln!(out, "deleted 1")?;
                }
                DeadLetterCommand::Purge { yes } => {
                    if !yes {
                        anyhow::bail!("purge deletes every dead letter; confirm with --yes");
                    }
                    writeln!(out, "purged {}", queues.purge_dead().await?)?;
                }
            }
        }
    }
    Ok(())
}
