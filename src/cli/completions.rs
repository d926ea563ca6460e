//! `swarm completions SHELL`: a shell completion script on stdout.
//!
//! Generated from the same clap definition that parses the command line, so
//! the completions can never name a flag the binary lacks. Packagers write
//! the output where their shell looks (see docs/service.md).

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// Print the script for `args.shell`.
pub fn run(args: &CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "swarm", &mut out);
    out.flush()?;
    Ok(0)
}
