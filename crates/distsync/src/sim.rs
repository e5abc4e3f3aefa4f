//! `distsync sim …`: deterministic simulation sweeps.

use clap::{Args, Subcommand};

/// Arguments of `distsync sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    pub target: SimTarget,
}

/// Which protocol to simulate.
#[derive(Debug, Subcommand)]
pub enum SimTarget {}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.target {}
}
