//! `distsync-report`: validate benchmark results and rebuild docs/performance/README.md.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Performance report generator (docs/performance/results/SCHEMA.md).
#[derive(Debug, Parser)]
#[command(name = "distsync-report", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check every result file against the schema; exits non-zero naming the first bad file.
    Validate {
        #[arg(long, default_value = "docs/performance/results/runs")]
        runs: PathBuf,
    },
    /// Validate, draw the charts and render the report.
    Render {
        #[arg(long, default_value = "docs/performance/results/runs")]
        runs: PathBuf,
        #[arg(long, default_value = "docs/performance/README.template.md")]
        template: PathBuf,
        /// Step log written by scripts/perf-report.sh (optional).
        #[arg(
            long,
            default_value = "docs/performance/results/perf-report-steps.json"
        )]
        steps: PathBuf,
        #[arg(long, default_value = "docs/performance/README.md")]
        out: PathBuf,
        #[arg(long, default_value = "docs/performance/charts")]
        charts: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Validate { runs } => {
            let loaded = distsync_report::schema::load_dir(&runs)?;
            println!("{} result files valid in {}", loaded.len(), runs.display());
        }
        Command::Render {
            runs,
            template,
            steps,
            out,
            charts,
        } => {
            let written = distsync_report::build(&distsync_report::Paths {
                runs: &runs,
                template: &template,
                steps: Some(&steps),
                out: &out,
                charts: &charts,
            })?;
            println!("wrote {} and {} charts", out.display(), written.len());
        }
    }
    Ok(())
}
