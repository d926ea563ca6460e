//! The records of the ledger: what a job is, and what happened to each of
//! its tasks.
//!
//! Every type here is plain data with a canonical encoding (ordered maps and
//! sets only), because two replicas that saw the same deltas must hold
//! byte-identical records. The lattice operations live in `merge.rs`; what
//! is *derived* from a record (a task's status, a job's progress) lives in
//! `derive.rs`, so nothing derived is ever stored and then contradicted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

use super::crdt::{Flag, GSet, Lww, Max};

/// A node's identity: the text form of its libp2p `PeerId`. The ledger only
/// needs it to be stable, ordered and printable, so it stays a string and the
/// ledger stays free of libp2p.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(s: impl Into<String>) -> NodeId {
        NodeId(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The last few characters: peer ids share their prefix, so the tail is
    /// what tells two of them apart in a table.
    pub fn short(&self) -> &str {
        let n = self.0.len();
        let cut = n.saturating_sub(8);
        self.0.get(cut..).unwrap_or(&self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// A job's id: the hash of its spec's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct JobId(pub Hash);

impl JobId {
    pub fn short(&self) -> String {
        self.0.short(12)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.short())
    }
}

impl FromStr for JobId {
    type Err = crate::hash::ParseHashError;
    fn from_str(s: &str) -> Result<JobId, Self::Err> {
        s.parse().map(JobId)
    }
}

/// Index of a task within its job (0-based, in frame order).
pub type TaskIndex = u32;

/// A Lamport timestamp plus the node that made it: a total order on events
/// across the swarm, with no clock synchronisation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default)]
pub struct Stamp {
    pub lamport: u64,
    pub node: NodeId,
}

/// The frames of a job: `start..=end` every `step`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct FrameRange {
    pub start: u32,
    pub end: u32,
    pub step: u32,
}

impl FrameRange {
    /// How many frames the range holds (0 for a range that is malformed).
    pub fn count(&self) -> u64 {
        if self.step == 0 || self.end < self.start {
            return 0;
        }
        u64::from((self.end - self.start) / self.step) + 1
    }

    /// The `i`-th frame of the range.
    pub fn nth(&self, i: u64) -> Option<u32> {
        if i >= self.count() {
            return None;
        }
        let f = u64::from(self.start) + i * u64::from(self.step);
        u32::try_from(f).ok()
    }
}

/// Why a frame range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameRangeError {
    #[error(
        "`{0}` is not a frame range: write START-END, START-END:STEP or a single frame, e.g. 1-24"
    )]
    Syntax(String),
    #[error("frame range `{0}` ends before it starts: write it as {2}-{1}")]
    Backwards(String, u32, u32),
    #[error("frame range `{0}` has step 0: the step must be at least 1")]
    ZeroStep(String),
}

impl FromStr for FrameRange {
    type Err = FrameRangeError;
    fn from_str(text: &str) -> Result<FrameRange, FrameRangeError> {
        let s = text.trim();
        let syntax = || FrameRangeError::Syntax(text.to_string());
        let (range, step) = match s.split_once(':') {
            Some((r, st)) => (r, st.trim().parse::<u32>().map_err(|_| syntax())?),
            None => (s, 1),
        };
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (range.trim(), range.trim()),
        };
        let start: u32 = start.parse().map_err(|_| syntax())?;
        let end: u32 = end.parse().map_err(|_| syntax())?;
        if step == 0 {
            return Err(FrameRangeError::ZeroStep(text.to_string()));
        }
        if end < start {
            return Err(FrameRangeError::Backwards(text.to_string(), start, end));
        }
        Ok(FrameRange { start, end, step })
    }
}

impl fmt::Display for FrameRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.step == 1 {
            write!(f, "{}-{}", self.start, self.end)
        } else {
            write!(f, "{}-{}:{}", self.start, self.end, self.step)
        }
    }
}

/// The immutable description of a job. Its hash is the job's id, so two
/// records under one id always carry the same spec.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct JobSpec {
    /// What people call the job (defaults to the scene's file name).
    pub name: String,
    /// The bundle blob holding the scene and its assets.
    pub scene: Hash,
    /// The scene file's path inside the bundle.
    pub scene_file: String,
    /// The engine that renders it: `builtin`, `blender` or a command name.
    pub engine: String,
    pub frames: FrameRange,
    pub frames_per_task: u32,
    /// Higher runs first.
    pub priority: i32,
    /// Overrides the scene's own output format (`PNG`, `OPEN_EXR`, ...).
    pub output_format: Option<String>,
    /// Tags a node must carry to take the job.
    pub requirements: BTreeSet<String>,
    /// Failed attempts per task (per retry generation) before it is Failed.
    pub max_attempts: u32,
    /// Per-task timeout.
    pub timeout_secs: Option<u32>,
    /// Where the submitting node writes the finished frames, on its own disk.
    pub collect_dir: Option<String>,
    /// Engine- or feature-specific settings, for what later versions add.
    pub options: BTreeMap<String, String>,
    pub submitter: NodeId,
    /// The submitter's wall clock at submission, in ms since the Unix epoch:
    /// shown to people and used for "oldest first", never for correctness.
    pub submitted_ms: u64,
}

/// `JobSpec::options` key: the device Cycles renders on (`render::Device`).
pub const DEVICE_OPTION: &str = "device";
/// `JobSpec::options` key of an encode job: the render job it encodes.
pub const ENCODE_OF_OPTION: &str = "encode_of";
/// `JobSpec::options` key of an encode job: `mp4` or `prores`.
pub const ENCODE_CODEC_OPTION: &str = "encode";
/// `JobSpec::options` key of an encode job: frames per second.
pub const ENCODE_FPS_OPTION: &str = "fps";

impl JobSpec {
    /// Number of tasks: frames grouped `frames_per_task` at a time.
    pub fn task_count(&self) -> u32 {
        let fpt = u64::from(self.frames_per_task.max(1));
        let n = self.frames.count().div_ceil(fpt);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The frames task `index` renders, in order.
    pub fn task_frames(&self, index: TaskIndex) -> Vec<u32> {
        let fpt = u64::from(self.frames_per_task.max(1));
        let first = u64::from(index) * fpt;
        (first..first + fpt)
            .map_while(|i| self.frames.nth(i))
            .collect()
    }

    /// How many frames task `index` renders: `task_frames(index).len()`
    /// without making the list (a job's progress counts every task's).
    pub fn task_frame_count(&self, index: TaskIndex) -> u64 {
        let fpt = u64::from(self.frames_per_task.max(1));
        let first = u64::from(index).saturating_mul(fpt);
        self.frames.count().saturating_sub(first).min(fpt)
    }

    /// The task that renders `frame`, if the job renders it.
    pub fn task_of_frame(&self, frame: u32) -> Option<TaskIndex> {
        let r = &self.frames;
        if r.step == 0
            || frame < r.start
            || frame > r.end
            || !(frame - r.start).is_multiple_of(r.step)
        {
            return None;
        }
        let i = u64::from((frame - r.start) / r.step);
        u32::try_from(i / u64::from(self.frames_per_task.max(1))).ok()
    }
}

/// Whether a job may be worked on. Cancelling is a separate, absorbing flag.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default,
)]
pub enum Control {
    #[default]
    Active,
    Paused,
}

/// "I am rendering this task": a claim at an epoch. See `TaskState::winning_claim`
/// for which of several claims wins.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct Claim {
    pub epoch: u32,
    pub lamport: u64,
    pub node: NodeId,
}

impl Claim {
    /// Whether `self` beats `other` by the claims alone: a higher epoch
    /// wins; within an epoch the earlier `(lamport, node)` wins. The task's
    /// winner also weighs the starts: within the top epoch a claim whose
    /// owner has started beats one whose owner has not, so a render under
    /// way is not pre-empted by a concurrent claim that reached its node
    /// too late (`TaskState::winning_claim`).
    pub fn beats(&self, other: &Claim) -> bool {
        if self.epoch != other.epoch {
            return self.epoch > other.epoch;
        }
        (self.lamport, &self.node) < (other.lamport, &other.node)
    }
}

/// A claim's owner started its engine: the render is under way and, if it
/// does not end in the task's result, its time was wasted.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct Start {
    pub epoch: u32,
    pub node: NodeId,
}

/// How an attempt ended without output.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub enum EndKind {
    /// The engine failed: counts as an attempt.
    Failed,
    /// The node let go (clean shutdown, lost race, job cancelled): does not count.
    Released,
}

/// An attempt that ended without output.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct End {
    pub epoch: u32,
    pub node: NodeId,
    /// The job's retry generation the attempt belonged to.
    pub generation: u32,
    pub kind: EndKind,
    /// One line a person understands, with the engine's log tail after it.
    pub reason: String,
    /// The engine's whole log, as a blob.
    pub log: Option<Hash>,
}

/// One rendered frame: its blob and the file extension the engine gave it
/// (`png`, `exr`, ...), so it is collected under the right name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct Output {
    pub blob: Hash,
    pub ext: String,
}

/// A task's outputs by frame, sorted by frame: a map kept as a vector of
/// exactly its entries, since a task renders one to a few frames and every
/// task a farm has run keeps its outputs (a `BTreeMap` allocates a node for
/// eleven, some 670 bytes, for one frame). It orders, encodes and decodes as
/// a `BTreeMap<u32, Output>` does: the same bytes on disk and on the wire,
/// the same winning Done; decoding sorts by frame and keeps the last of
/// repeated frames, as a `BTreeMap` would.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Outputs(Vec<(u32, Output)>);

type Pair<'a> = (&'a u32, &'a Output);

/// What iterating [`Outputs`] gives: `(frame, output)` pairs by frame.
pub type OutputsIter<'a> =
    std::iter::Map<std::slice::Iter<'a, (u32, Output)>, fn(&(u32, Output)) -> Pair<'_>>;

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    pub fn get(&self, frame: &u32) -> Option<&Output> {
        let at = self.0.binary_search_by_key(frame, |(f, _)| *f).ok()?;
        Some(&self.0[at].1)
    }

    pub fn iter(&self) -> OutputsIter<'_> {
        self.0.iter().map(|(f, o)| (f, o))
    }

    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(f, _)| f)
    }

    pub fn values(&self) -> impl Iterator<Item = &Output> {
        self.0.iter().map(|(_, o)| o)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(u32, Output)> for Outputs {
    /// Sorted by frame; of repeated frames the last one given stays.
    fn from_iter<I: IntoIterator<Item = (u32, Output)>>(iter: I) -> Self {
        let mut v: Vec<(u32, Output)> = iter.into_iter().collect();
        // Stable, so repeated frames keep their order and the last is kept.
        v.sort_by_key(|(f, _)| *f);
        v.reverse();
        v.dedup_by_key(|(f, _)| *f);
        v.reverse();
        v.shrink_to_fit();
        Outputs(v)
    }
}

impl<const N: usize> From<[(u32, Output); N]> for Outputs {
    fn from(xs: [(u32, Output); N]) -> Self {
        xs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = Pair<'a>;
    type IntoIter = OutputsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Outputs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Outputs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Outputs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of frame to output")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Outputs, A::Error> {
                // Not sized by the length the input claims: a peer's record
                // could claim any.
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    v.push(entry);
                }
                Ok(v.into_iter().collect())
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A finished task: the output of every frame. Absorbing.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct Done {
    pub outputs: Outputs,
    pub node: NodeId,
    pub epoch: u32,
    pub lamport: u64,
    pub render_ms: u64,
}

/// Everything that happened to one task: grow-only sets, so merging is set
/// union and the record is also the task's history.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
pub struct TaskState {
    pub claims: GSet<Claim>,
    pub starts: GSet<Start>,
    pub ends: GSet<End>,
    pub dones: GSet<Done>,
}

/// The replicated state of one job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub control: Lww<Control>,
    /// The priority people set after submission (starts as the spec's).
    pub priority: Lww<i32>,
    /// Cancel is final.
    pub cancelled: Flag,
    /// Finished and old: kept, no longer offered in digests.
    pub archived: Flag,
    /// The submitter wrote every output where it was asked to.
    pub collected: Flag,
    /// Bumped by "retry failed": each failed task gets fresh attempts.
    pub retry_generation: Max<u32>,
    pub tasks: BTreeMap<TaskIndex, TaskState>,
}

impl JobRecord {
    /// A fresh record for a new job.
    pub fn new(spec: JobSpec) -> JobRecord {
        let priority = Lww::new(Stamp::default(), spec.priority);
        JobRecord {
            spec,
            control: Lww::default(),
            priority,
            cancelled: Flag::default(),
            archived: Flag::default(),
            collected: Flag::default(),
            retry_generation: Max::default(),
            tasks: BTreeMap::new(),
        }
    }

    /// A record carrying only the spec: the base of every delta.
    pub fn empty_like(&self) -> JobRecord {
        JobRecord::new(self.spec.clone())
    }

    /// Everything but the tasks.
    pub fn header(&self) -> JobRecord {
        JobRecord {
            spec: self.spec.clone(),
            control: self.control.clone(),
            priority: self.priority.clone(),
            cancelled: self.cancelled,
            archived: self.archived,
            collected: self.collected,
            retry_generation: self.retry_generation,
            tasks: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(frames: FrameRange, fpt: u32) -> JobSpec {
        JobSpec {
            name: "t".into(),
            scene: Hash::of(b"scene"),
            scene_file: "scene.toml".into(),
            engine: "builtin".into(),
            frames,
            frames_per_task: fpt,
            priority: 0,
            output_format: None,
            requirements: BTreeSet::new(),
            max_attempts: 3,
            timeout_secs: None,
            collect_dir: None,
            options: BTreeMap::new(),
            submitter: NodeId::new("a"),
            submitted_ms: 0,
        }
    }

    #[test]
    fn tasks_group_frames_with_step() {
        let s = spec(
            FrameRange {
                start: 1,
                end: 10,
                step: 2,
            },
            2,
        );
        assert_eq!(s.frames.count(), 5);
        assert_eq!(s.task_count(), 3);
        assert_eq!(s.task_frames(0), vec![1, 3]);
        assert_eq!(s.task_frames(2), vec![9]);
        assert!(s.task_frames(3).is_empty());
        for (start, end, step, fpt) in [(1, 10, 2, 2), (1, 48, 1, 4), (5, 5, 1, 3), (0, 100, 7, 1)]
        {
            let s = spec(FrameRange { start, end, step }, fpt);
            for i in 0..s.task_count() + 2 {
                assert_eq!(s.task_frame_count(i), s.task_frames(i).len() as u64);
            }
        }
        assert_eq!(s.task_of_frame(9), Some(2));
        assert_eq!(s.task_of_frame(4), None);
        assert_eq!(s.task_of_frame(11), None);
    }

    #[test]
    fn frame_ranges_parse_or_say_why() {
        let r = |s: &str| s.parse::<FrameRange>();
        assert_eq!(
            r("1-24").unwrap(),
            FrameRange {
                start: 1,
                end: 24,
                step: 1
            }
        );
        assert_eq!(
            r(" 7 ").unwrap(),
            FrameRange {
                start: 7,
                end: 7,
                step: 1
            }
        );
        assert_eq!(r("1-10:3").unwrap().count(), 4);
        assert_eq!(
            r("10-1").unwrap_err().to_string(),
            "frame range `10-1` ends before it starts: write it as 1-10"
        );
        assert!(matches!(r("1-5:0"), Err(FrameRangeError::ZeroStep(_))));
        for bad in ["", "a-b", "1-", "-3", "1-2-3", "1..4"] {
            assert!(matches!(r(bad), Err(FrameRangeError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn claim_order() {
        let c = |epoch, lamport, node: &str| Claim {
            epoch,
            lamport,
            node: NodeId::new(node),
        };
        assert!(c(2, 9, "b").beats(&c(1, 1, "a")));
        assert!(c(1, 1, "b").beats(&c(1, 2, "a")));
        assert!(c(1, 1, "a").beats(&c(1, 1, "b")));
        assert!(!c(1, 1, "a").beats(&c(1, 1, "a")));
    }

    fn out(n: u8) -> Output {
        Output {
            blob: Hash::of(&[n]),
            ext: format!("e{n}"),
        }
    }

    /// `Outputs` stands in for the `BTreeMap` records were written with:
    /// the same bytes in postcard and JSON, the same order between two,
    /// and decoding puts frames in order and keeps the last of a repeat.
    #[test]
    fn outputs_encode_order_and_decode_as_a_btreemap_does() {
        let pairs = [(9, out(1)), (2, out(2)), (5, out(3))];
        let map: BTreeMap<u32, Output> = pairs.iter().cloned().collect();
        let outs = Outputs::from(pairs.clone());
        assert!(outs.iter().eq(map.iter()));
        assert_eq!(outs.get(&5), map.get(&5));
        assert_eq!(outs.get(&6), None);
        assert_eq!(
            postcard::to_allocvec(&outs).unwrap(),
            postcard::to_allocvec(&map).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&outs).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let back: Outputs = postcard::from_bytes(&postcard::to_allocvec(&map).unwrap()).unwrap();
        assert_eq!(back, outs);

        let other = Outputs::from([(2, out(2)), (5, out(4))]);
        let other_map: BTreeMap<u32, Output> = other.iter().map(|(f, o)| (*f, o.clone())).collect();
        assert_eq!(outs.cmp(&other), map.cmp(&other_map));
        assert_eq!(other.cmp(&outs), other_map.cmp(&map));

        let repeated: Vec<(u32, Output)> = vec![(3, out(1)), (1, out(2)), (3, out(3))];
        let bytes = postcard::to_allocvec(&repeated).unwrap();
        let as_map: BTreeMap<u32, Output> = postcard::from_bytes(&bytes).unwrap();
        let as_outputs: Outputs = postcard::from_bytes(&bytes).unwrap();
        assert!(as_outputs.iter().eq(as_map.iter()));
        assert_eq!(as_outputs.get(&3), Some(&out(3)));
    }
}
