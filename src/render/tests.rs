//! Tests of `Engines` end to end with the builtin engine and command engines (real processes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A work directory with a scene file and an empty output directory.
struct Task {
    _dir: tempfile::TempDir,
    workdir: PathBuf,
    output: PathBuf,
}

impl Task {
    fn new(scene_text: &str) -> Task {
        let dir = tempfile::tempdir().unwrap();
        let workdir = dir.path().join("bundle");
        let output = dir.path().join("out");
        std::fs::create_dir_all(&workdir).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        std::fs::write(workdir.join("scene.toml"), scene_text).unwrap();
        Task {
            _dir: dir,
            workdir,
            output,
        }
    }

    fn request(&self, frames: &[u32]) -> RenderRequest {
        RenderRequest {
            scene: PathBuf::from("scene.toml"),
            workdir: self.workdir.clone(),
            frames: frames.to_vec(),
            output_dir: self.output.clone(),
            output_format: None,
            timeout: None,
            device: None,
            gpu: None,
        }
    }
}

/// A real scene that renders in well under a second.
const TINY: &str = include_str!("../../examples/tiny.toml");

/// A real scene whose one frame takes minutes: orbit at 4K with many samples.
fn slow_scene() -> String {
    include_str!("../../examples/orbit.toml")
        .replace("width = 320", "width = 3840")
        .replace("height = 180", "height = 2160")
        .replacen("samples = 4", "samples = 256", 1)
}

/// Engines without the PATH search for Blender (asking its version costs most of a second).
fn engines(commands: &[(&str, &str)], stall: Duration) -> Engines {
    let commands = commands
        .iter()
        .map(|(n, t)| (n.to_string(), command::Template::parse(n, t).unwrap()))
        .collect::<BTreeMap<_, _>>();
    Engines {
        blender: None,
        ffmpeg: None,
        commands,
        threads: 2,
        stall,
        nice: DEFAULT_RENDER_NICE,
    }
}

async fn render(
    engines: &Engines,
    engine: &str,
    req: RenderRequest,
) -> Result<RenderOutput, RenderFailure> {
    let (tx, _rx) = watch::channel(Progress::default());
    engines
        .render(engine, req, CancellationToken::new(), tx)
        .await
}

#[tokio::test]
async fn builtin_renders_each_frame_to_a_png_in_memory() {
    let task = Task::new(TINY);
    let e = engines(&[], DEFAULT_STALL);
    let (tx, rx) = watch::channel(Progress::default());
    let out = e
        .render(
            "builtin",
            task.request(&[2, 1, 2]),
            CancellationToken::new(),
            tx,
        )
        .await
        .unwrap();
    assert_eq!(out.frames.keys().copied().collect::<Vec<_>>(), [1, 2]);
    for frame in out.frames.values() {
        let crate::render::Frame::Png(png) = frame else {
            panic!("the builtin engine wrote a file: {frame:?}");
        };
        let info = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap()
            .info()
            .clone();
        assert_eq!((info.width, info.height), (16, 16));
        assert_eq!(frame.ext(), "png");
    }
    assert_eq!(
        std::fs::read_dir(&task.output).unwrap().count(),
        0,
        "nothing is written to the output directory"
    );
    assert_eq!(rx.borrow().fraction, 1.0);
    assert!(String::from_utf8_lossy(&out.log).contains("frame 2:"));
}

#[tokio::test]
async fn builtin_scene_errors_carry_the_parse_message() {
    let task = Task::new("camera = 1\nerror here\n");
    let failure = render(&engines(&[], DEFAULT_STALL), "builtin", task.request(&[1]))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::EngineError);
    assert!(
        failure.reason.contains("not a valid builtin scene"),
        "{}",
        failure.reason
    );
    assert!(failure.reason.contains("line 2"), "{}", failure.reason);
}

#[tokio::test]
async fn builtin_refuses_oversized_scenes() {
    let task = Task::new(&"#".repeat(builtin::MAX_SCENE_BYTES + 1));
    let failure = render(&engines(&[], DEFAULT_STALL), "builtin", task.request(&[1]))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::EngineError);
    assert!(failure.reason.contains("8 MiB"), "{}", failure.reason);
}

#[tokio::test]
async fn builtin_honours_cancel_and_timeout() {
    let task = Task::new(&slow_scene());
    let e = engines(&[], DEFAULT_STALL);
    let (tx, mut rx) = watch::channel(Progress::default());
    let cancel = CancellationToken::new();
    let canceller = async {
        rx.wait_for(|p| p.message.contains("rendering"))
            .await
            .unwrap();
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(
        e.render("builtin", task.request(&[1]), cancel.clone(), tx),
        canceller
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Cancelled);
    assert!(!failure.kind.counts_as_attempt());

    let task = Task::new(&slow_scene());
    let mut req = task.request(&[1]);
    req.timeout = Some(Duration::from_millis(300));
    let failure = render(&e, "builtin", req).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout);
    assert!(failure.reason.contains("300 ms"), "{}", failure.reason);
}

#[tokio::test]
async fn requests_are_checked_before_anything_runs() {
    let e = engines(&[("touch", "touch {output}/ran")], DEFAULT_STALL);
    // An engine that writes files needs an empty output directory.
    let task = Task::new("x");
    std::fs::write(task.output.join("frame_0001.png"), b"stale").unwrap();
    let failure = render(&e, "touch", task.request(&[1])).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::EngineError);
    assert!(failure.reason.contains("not empty"), "{}", failure.reason);
    assert!(!task.output.join("ran").exists(), "the engine never ran");

    let task = Task::new("x");
    let mut req = task.request(&[1]);
    req.scene = PathBuf::from("../../etc/passwd");
    let failure = render(&e, "builtin", req).await.unwrap_err();
    assert!(
        failure.reason.contains("outside the work directory"),
        "{}",
        failure.reason
    );

    let failure = render(&e, "builtin", task.request(&[])).await.unwrap_err();
    assert!(failure.reason.contains("no frames"), "{}", failure.reason);

    let failure = render(&e, "povray", task.request(&[1])).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::EngineError);
    assert!(
        failure.reason.contains("`povray` is not configured"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn command_runs_once_per_frame_with_frame() {
    let template =
        r#"sh -c 'echo "frame $2"; printf "%s" "$2" > "$1/frame_$2.txt"' sh {output} {frame:04}"#;
    let e = engines(&[("txt", template)], DEFAULT_STALL);
    let task = Task::new("x");
    let out = render(&e, "txt", task.request(&[9, 10])).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(out.frames[&10].path().unwrap()).unwrap(),
        "0010"
    );
    let log = String::from_utf8_lossy(&out.log);
    assert!(
        log.contains("frame 0009") && log.contains("frame 0010"),
        "{log}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_command_engine_renders_at_the_nodes_render_niceness() {
    let template = r#"sh -c 'read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ n _ < /proc/$$/stat; printf %s "$n" > "$1/frame_$2.txt"' sh {output} {frame:04}"#;
    let e = engines(&[("nice", template)], DEFAULT_STALL);
    let task = Task::new("x");
    let out = render(&e, "nice", task.request(&[1])).await.unwrap();
    let nice = std::fs::read_to_string(out.frames[&1].path().unwrap()).unwrap();
    let node = runner::own_nice().unwrap();
    assert_eq!(nice, DEFAULT_RENDER_NICE.max(node).to_string());
}

#[tokio::test]
async fn command_runs_once_per_task_with_start_and_end() {
    let template = r#"sh -c 'for f in $(seq "$2" "$3"); do n=$(printf %04d "$f"); echo x > "$1/frame_$n.dat"; echo run; done' sh {output} {start} {end}"#;
    let e = engines(&[("seq", template)], DEFAULT_STALL);
    let task = Task::new("x");
    let out = render(&e, "seq", task.request(&[3, 4, 5])).await.unwrap();
    assert_eq!(out.frames.len(), 3);
    let log = String::from_utf8_lossy(&out.log);
    assert_eq!(log.matches("[swarm] running").count(), 1, "{log}");
}

#[tokio::test]
async fn command_failures_become_typed_failures() {
    let e = engines(
        &[
            ("nothing", "true {scene}"),
            (
                "fails",
                r#"sh -c 'echo working; echo "ERROR: no camera in scene" >&2; exit 4'"#,
            ),
            (
                "badpng",
                r#"sh -c 'printf "\211PNG\r\n\032\nxx" > "$1/frame_0001.png"' sh {output}"#,
            ),
            ("silent", "sleep 30"),
            ("missing", "/nonexistent/renderer {scene}"),
        ],
        Duration::from_millis(300),
    );
    let cases: &[(&str, FailureKind, &str)] = &[
        ("nothing", FailureKind::MissingOutput, "frame(s) 1"),
        (
            "fails",
            FailureKind::Exit(4),
            "`fails` exited with code 4: ERROR: no camera in scene",
        ),
        ("badpng", FailureKind::BadOutput, "frame_0001.png"),
        ("silent", FailureKind::Stall, "printed nothing for 300 ms"),
        ("missing", FailureKind::Spawn, "/nonexistent/renderer"),
    ];
    for (engine, kind, needle) in cases {
        let task = Task::new("x");
        let failure = render(&e, engine, task.request(&[1])).await.unwrap_err();
        assert_eq!(failure.kind, *kind, "{engine}: {}", failure.reason);
        assert!(
            failure.reason.contains(needle),
            "{engine}: {}",
            failure.reason
        );
        assert!(
            !failure.log.is_empty() && !failure.log_tail.is_empty(),
            "{engine}"
        );
    }
}

#[test]
fn configuration_errors_name_what_is_wrong() {
    let cfg = EngineConfig {
        blender: Some(PathBuf::from("/nonexistent/blender")),
        ..EngineConfig::default()
    };
    assert!(matches!(
        Engines::new(&cfg),
        Err(EngineError::BlenderUnusable { .. })
    ));
    let mut cfg = EngineConfig::default();
    cfg.commands.insert("blender".into(), "x {scene}".into());
    assert!(matches!(
        Engines::new(&cfg),
        Err(EngineError::BadName { .. })
    ));
    let mut cfg = EngineConfig::default();
    cfg.commands.insert("x".into(), "r {nope}".into());
    let err = Engines::new(&cfg).unwrap_err().to_string();
    assert!(err.contains("r {nope}"), "{err}");
}

#[tokio::test]
async fn engines_list_builtin_and_commands() {
    let e = engines(&[("mycmd", "r {scene}")], DEFAULT_STALL);
    assert!(e.has("builtin") && e.has("mycmd") && !e.has("povray"));
    let names = e.names();
    assert!(names.contains(&"builtin".to_owned()) && names.contains(&"mycmd".to_owned()));
    assert!(!names.contains(&"blender".to_owned()) && !e.has("blender"));
    let failure_reason = "Blender is not installed on this node";
    let task = Task::new("x");
    let (tx, _rx) = watch::channel(Progress::default());
    let failure = e
        .render("blender", task.request(&[1]), CancellationToken::new(), tx)
        .await
        .unwrap_err();
    assert_eq!(
        (failure.kind, failure.reason.as_str()),
        (FailureKind::EngineError, failure_reason)
    );
    let info = e.describe();
    let mycmd = info.iter().find(|i| i.name == "mycmd").unwrap();
    assert_eq!(mycmd.version, "command: r {scene}");
}

#[test]
fn engines_can_be_shared_and_renders_spawned() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let e = engines(&[], DEFAULT_STALL);
    send_sync(&e);
    let task = Task::new("x");
    let (tx, _rx) = watch::channel(Progress::default());
    let future = e.render("builtin", task.request(&[1]), CancellationToken::new(), tx);
    send(&future);
}
