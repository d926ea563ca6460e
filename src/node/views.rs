//! The JSON face of jobs, tasks and nodes: a stable interface for scripts.
//!
//! The API serves these; the CLI reads them back with the same types, so
//! the two cannot drift apart. Field names are part of the interface: add,
//! never rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::{JobStatus, TaskStatus};
use crate::telemetry::Telemetry;

/// One frame's output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutputView {
    pub blob: String,
    pub ext: String,
}

/// One task of a job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskView {
    pub index: u32,
    pub frames: Vec<u32>,
    pub status: TaskStatus,
    /// The node rendering it, or that rendered it.
    pub node: Option<String>,
    pub node_name: Option<String>,
    /// Renders started for this task.
    pub attempts: u32,
    /// Failed attempts in the current retry generation.
    pub failures: u32,
    /// 0..=1 while running.
    pub progress: Option<f32>,
    /// Why the last attempt failed, with the engine's log tail.
    pub reason: Option<String>,
    /// The failed attempt's whole log, as a blob.
    pub log: Option<String>,
    pub render_ms: Option<u64>,
    pub outputs: BTreeMap<u32, OutputView>,
}

/// A job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub status: JobStatus,
    pub engine: String,
    pub scene_file: String,
    /// `A-B` or `A-B:STEP`.
    pub frames: String,
    pub frames_per_task: u32,
    pub priority: i32,
    pub max_attempts: u32,
    pub submitter: String,
    pub submitted_ms: u64,
    pub frames_total: u64,
    pub frames_done: u64,
    pub tasks_total: u32,
    pub tasks_pending: u32,
    pub tasks_running: u32,
    pub tasks_done: u32,
    pub tasks_failed: u32,
    pub renders_started: u32,
    pub renders_wasted: u32,
    pub mean_render_ms: Option<u64>,
    /// Seconds until done at the current pace, while running.
    pub eta_secs: Option<u64>,
    /// Why tasks are pending with none running, when no node will take
    /// them now: every node that can run the job is asleep, or no live node
    /// can run it at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub collect_dir: Option<String>,
    pub collected: bool,
    /// Put away (`swarm archive`): left out of job lists unless asked for.
    #[serde(default)]
    pub archived: bool,
    /// Tags a node must carry to take the job.
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Engine settings: `device`, `encode`, ...
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    /// Absent in light listings (`?tasks=false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskView>>,
}

/// A task a node is working on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeTaskView {
    pub job: String,
    pub job_name: String,
    pub task: u32,
    pub frames: Vec<u32>,
    pub progress: f32,
}

/// A node of the swarm.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    /// This is the node answering.
    pub me: bool,
    pub alive: bool,
    /// `idle`, `rendering`, `asleep` or `offline` (a sleeping node that
    /// still finishes renders is `rendering`, with `asleep` set).
    pub state: String,
    /// Why it takes no new tasks now: `by hand`, or `by its schedule`
    /// (until when it next wakes); `None` while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asleep: Option<String>,
    /// Milliseconds since its last heartbeat arrived (0 for this node).
    pub last_seen_ms: u64,
    pub slots: u32,
    pub tasks: Vec<NodeTaskView>,
    pub engines: Vec<String>,
    pub tags: Vec<String>,
    pub version: String,
    pub web: Option<String>,
    /// Percent of all cores.
    pub cpu: f32,
    /// Bytes used.
    pub memory: u64,
    pub memory_total: u64,
    pub rtt_ms: Option<f64>,
    pub telemetry: Telemetry,
    /// The last minutes of telemetry, oldest first (with `?history=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Sample>,
}

/// One telemetry sample in a node's history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Wall clock of the node that took it, ms since the Unix epoch.
    pub t: u64,
    /// Percent of all cores.
    pub cpu: f32,
    /// Bytes of memory used.
    pub mem: u64,
    /// Percent busy of the busiest GPU, where known.
    pub gpu: Option<f32>,
    pub disk_free: u64,
}

impl Sample {
    pub fn of(t: u64, tel: &Telemetry) -> Sample {
        let gpu = tel.gpus.iter().filter_map(|g| g.usage).reduce(f32::max);
        Sample {
            t,
            cpu: tel.cpu,
            mem: tel.memory_used,
            gpu,
            disk_free: tel.disk_free,
        }
    }
}

/// An API error: what was wrong, and which field of the request, if any.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorView {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Every task's state in one character, for the page's frame grid:
/// `p` pending, `r` running, `d` done, `f` failed, `w` done with wasted renders.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GridView {
    pub id: String,
    pub frames_per_task: u32,
    pub task_count: u32,
    /// First frame, last frame, step.
    pub frames: [u32; 3],
    pub states: String,
}

/// An alert of the swarm's shared log, and whether it was sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertView {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub time_ms: u64,
    /// The node that saw it.
    pub node_name: String,
    pub job: Option<String>,
    pub job_name: Option<String>,
    pub frames: Vec<u32>,
    pub message: String,
    pub reason: Option<String>,
    /// Some node sent it (email and/or webhook).
    pub delivered: bool,
    /// The node that sent it.
    pub sent_by: Option<String>,
    /// The node whose claim to send it wins, while it is not delivered.
    pub claimed_by: Option<String>,
}
