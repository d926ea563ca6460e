//! The `swarm` command line. Every command but `node` (and `demo`) talks to
//! a node through its HTTP API (`--api URL`, env `SWARM_API`, default the
//! local node), so the CLI works the same against any node of the swarm.
//!
//! Raw flags are parsed by clap here; `node.rs` turns them (with the config
//! file) into a validated `NodeConfig` in one place. Errors are `anyhow` at
//! this edge only: a [`BadInput`] anywhere in the chain means the user's
//! input was wrong and the process exits 2; other errors exit 1.

mod bench;
mod client;
mod completions;
mod config_file;
mod demo;
mod jobs;
mod local_swarm;
mod man;
mod node;
pub mod service;
mod size;
mod sleep;
mod submit;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use client::Api;

/// The user's input was wrong: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl BadInput {
    /// `value` of option `flag` (`--nodes`) unless it is outside
    /// `low..=high`, which is said with the range.
    pub fn check_range<T>(flag: &str, value: T, low: T, high: T) -> Result<T, BadInput>
    where
        T: PartialOrd + std::fmt::Display,
    {
        if value < low || value > high {
            return Err(BadInput(format!(
                "{flag} must be between {low} and {high}, not {value}"
            )));
        }
        Ok(value)
    }
}

/// `swarm --version`: the crate version and the commit it was built from
/// (stamped by build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SWARM_GIT_COMMIT"),
    ")"
);

/// A peer-to-peer, leaderless render farm.
#[derive(Parser, Debug)]
#[command(name = "swarm", version = VERSION, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the node's API is.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The node's API (default: the node on this machine).
    #[arg(
        long,
        env = "SWARM_API",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub api: String,
    /// The node's web token, when it requires one.
    #[arg(
        long = "token",
        env = "SWARM_WEB_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: render, serve the API and the page.
    Node(Box<node::NodeArgs>),
    /// Submit a scene (a file or a project folder).
    Submit(Box<submit::SubmitArgs>),
    /// List jobs.
    Jobs {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON (an array of jobs).
        #[arg(long)]
        json: bool,
        /// Archived jobs too.
        #[arg(long)]
        archived: bool,
    },
    /// Show one job and every task.
    Job(JobArgs),
    /// Stop handing out a job's tasks (renders under way finish).
    Pause(JobArgs),
    /// Hand out a paused job's tasks again.
    Resume(JobArgs),
    /// Cancel a job for good; renders under way are stopped.
    Cancel(JobArgs),
    /// Give every failed task of a job fresh attempts.
    Retry(JobArgs),
    /// Put a finished job away: off `swarm jobs` and the page (`swarm jobs
    /// --archived` still lists it); its frames and logs may then leave the
    /// caches, and nodes stop comparing it when they sync.
    Archive(JobArgs),
    /// Set a job's priority (higher runs first).
    Priority {
        #[command(flatten)]
        job: JobArgs,
        priority: i32,
    },
    /// List the other nodes this node knows, with what they are doing.
    Peers {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON (an array of nodes).
        #[arg(long)]
        json: bool,
    },
    /// Put the node to sleep: it takes no new tasks, still serves its files
    /// and page; renders under way finish (`--now` stops them, and they go
    /// back to the swarm without costing an attempt). Kept across restarts;
    /// with `--sleep-schedule`, until the schedule next changes.
    Sleep {
        #[command(flatten)]
        api: ApiArgs,
        /// Stop the renders under way too.
        #[arg(long)]
        now: bool,
        /// Print JSON (the node).
        #[arg(long)]
        json: bool,
    },
    /// Wake a sleeping node: it takes tasks again.
    Wake {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON (the node).
        #[arg(long)]
        json: bool,
    },
    /// Run a local swarm rendering the built-in example.
    Demo(demo::DemoArgs),
    /// Measure the swarm against an ideal farm on this machine (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Make a swarm key: nodes started with `--swarm-key FILE` form a private
    /// swarm that nodes without the key cannot join.
    Keygen {
        /// Where to write the key (refuses to overwrite); stdout when absent.
        file: Option<PathBuf>,
    },
    /// Alerts: `swarm alert test` sends a test mail with a node's settings.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// The GPUs this machine offers for rendering, and the tags they give a node.
    Gpus {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a job's finished frames.
    Fetch {
        #[command(flatten)]
        job: JobArgs,
        /// Where to write frame_0001.png, ...
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(completions::CompletionsArgs),
    /// Write the manual pages, or print swarm.1.
    Man(man::ManArgs),
    /// Run the node as a systemd service: install or uninstall its unit.
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AlertCommand {
    /// Send a test mail with the settings `swarm node` would use (the same
    /// flags and config file), and print the server's answer.
    Test(Box<node::NodeArgs>),
}

/// A job named by its id or a unique prefix of it.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// Job id, or a unique prefix of it.
    pub job: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn report(e: &anyhow::Error) -> i32 {
    if e.chain().any(is_broken_pipe) {
        return 0;
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if e.chain().any(|c| c.downcast_ref::<BadInput>().is_some()) {
        2
    } else {
        1
    }
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Node(args) => node::run(*args).await,
        Command::Submit(args) => submit::run(*args).await,
        Command::Jobs {
            api,
            json,
            archived,
        } => jobs::list(&api, json, archived).await,
        Command::Job(j) => jobs::show(&j).await,
        Command::Pause(j) => jobs::act(&j, "pause").await,
        Command::Resume(j) => jobs::act(&j, "resume").await,
        Command::Cancel(j) => jobs::act(&j, "cancel").await,
        Command::Retry(j) => jobs::act(&j, "retry").await,
        Command::Archive(j) => jobs::act(&j, "archive").await,
        Command::Priority { job, priority } => jobs::priority(&job, priority).await,
        Command::Fetch { job, out } => jobs::fetch(&job, &out).await,
        Command::Peers { api, json } => jobs::peers(&api, json).await,
        Command::Sleep { api, now, json } => sleep::sleep(&api, now, json).await,
        Command::Wake { api, json } => sleep::wake(&api, json).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Keygen { file } => keygen(file.as_deref()),
        Command::Gpus { json } => gpus(json),
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => man::run(&args),
        Command::Service { command } => service::run(command),
        Command::Alert {
            command: AlertCommand::Test(args),
        } => node::alert_test(*args).await,
    }
}

fn keygen(file: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let key = node::new_swarm_key()?;
    match file {
        None => print!("{key}"),
        Some(f) => {
            crate::node::net::write_private(f, key.as_bytes()).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => BadInput(format!(
                    "{} exists: a swarm key is not overwritten; remove it first",
                    f.display()
                )),
                _ => BadInput(format!("cannot write {}: {e}", f.display())),
            })?;
            eprintln!(
                "wrote a new swarm key to {}; copy it to every node and start them with --swarm-key {}",
                f.display(),
                f.display()
            );
        }
    }
    Ok(0)
}

fn gpus(json: bool) -> anyhow::Result<i32> {
    use crate::telemetry::gpu;
    let found = gpu::detect();
    let tags = gpu::tags(&found);
    if json {
        print_json(&serde_json::json!({ "gpus": found, "tags": tags }))?;
        return Ok(0);
    }
    if found.is_empty() {
        println!("no GPU found (NVML absent or no devices; sysinfo sees none)");
    }
    for g in &found {
        let backends = g.backends().join(", ");
        println!(
            "{:?} {} {}: {} MiB{}",
            g.vendor,
            g.index,
            g.name,
            g.memory_total >> 20,
            if backends.is_empty() {
                String::new()
            } else {
                format!(", renders with {backends}")
            }
        );
    }
    println!(
        "tags: {}",
        if tags.is_empty() {
            "(none)".into()
        } else {
            tags.join(",")
        }
    );
    Ok(0)
}

/// Print a JSON value on stdout.
pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
