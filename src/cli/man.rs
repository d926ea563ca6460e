//! `swarm man [--out DIR]`: manual pages made from the clap definition.
//!
//! Like the completions, the pages come from the parser itself, so they stay
//! true as flags change. With `--out` every visible command gets a page
//! (`swarm.1`, `swarm-node.1`, `swarm-alert-test.1`, ...), the layout
//! `man` expects under `share/man/man1`; without it `swarm.1` goes to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_mangen::Man;

use super::{BadInput, Cli};

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write swarm.1 and one page per subcommand into this directory
    /// (made if missing); without it, print swarm.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Write or print the pages.
pub fn run(args: &ManArgs) -> anyhow::Result<i32> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building names the subcommands `swarm-node`, ... for their pages.
    cmd.build();
    match &args.out {
        None => {
            let mut out = std::io::stdout().lock();
            Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| BadInput(format!("cannot make {}: {e}", dir.display())))?;
            for page in write_pages(cmd, dir)? {
                println!("{}", page.display());
            }
        }
    }
    Ok(0)
}

/// Write the page of `cmd` and of each visible subcommand, depth first.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(write_pages(sub.clone(), dir)?);
    }
    let man = Man::new(cmd);
    let path = dir.join(man.get_filename());
    man.generate_to(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    Ok(written)
}
