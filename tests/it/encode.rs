//! Movies: `submit --encode` makes an encode job that runs ffmpeg (Debian's,
//! real) over the finished frames, on the submitter or, when it is gone, on
//! whichever node has ffmpeg; the movie is collected like a frame.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// `tool` on PATH, or `false` (with a note) outside CI; under `CI=true` a
/// missing tool fails the test.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("-version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `{tool}` is not on PATH"
        );
        eprintln!("note: {tool} not on PATH; skipping a video test");
    }
    found
}

/// codec, frames, width, height of a movie's video stream, read by ffprobe.
fn probe(movie: &Path) -> (String, u64, u64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames,width,height",
        ])
        .args(["-of", "json"])
        .arg(movie)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let n = |k: &str| {
        s[k].as_u64()
            .or_else(|| s[k].as_str().and_then(|x| x.parse().ok()))
            .unwrap()
    };
    (
        s["codec_name"].as_str().unwrap().to_string(),
        n("nb_read_frames"),
        n("width"),
        n("height"),
    )
}

#[test]
fn frames_become_an_mp4_and_a_prores_movie_next_to_them() {
    if !(have("ffmpeg") && have("ffprobe")) {
        return;
    }
    let node = NodeProc::start(&[]);
    let tiny = example("tiny.toml");
    let tmp = tempfile::tempdir().unwrap();
    for (codec, file, fps, want) in [
        ("mp4", "movie.mp4", "12", "h264"),
        ("prores", "movie.mov", "30", "prores"),
    ] {
        let out = tmp.path().join(codec);
        let run = node.cli(&[
            "submit",
            tiny.to_str().unwrap(),
            "--frames",
            "1-11:2",
            "--encode",
            codec,
            "--fps",
            fps,
            "--out",
            out.to_str().unwrap(),
            "--wait",
        ]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{codec}: {err}");
        assert!(err.contains("encoding the frames"), "{err}");
        for f in [1, 3, 5, 7, 9, 11] {
            assert!(out.join(format!("frame_{f:04}.png")).is_file());
        }
        let (codec_name, frames, w, h) = probe(&out.join(file));
        eprintln!("{file}: {codec_name}, {frames} frames, {w}x{h}");
        assert_eq!(
            (codec_name.as_str(), frames),
            (want, 6),
            "every frame, in order"
        );
        assert_eq!((w, h), (16, 16));
    }
    let jobs = node.jobs();
    let movie = jobs.iter().find(|j| j.engine == "ffmpeg").unwrap();
    assert_eq!(movie.status, renderswarm::ledger::JobStatus::Done);
    assert!(movie.name.ends_with("(mp4)") || movie.name.ends_with("(prores)"));
}

/// The submitter is killed while the frames render elsewhere: the node that
/// is left encodes them once the submitter's lease is over.
#[test]
fn the_movie_is_made_elsewhere_when_the_submitter_is_gone() {
    if !(have("ffmpeg") && have("ffprobe")) {
        return;
    }
    exclusive();
    let engine = "png=sh -c 'sleep 1; ffmpeg -v error -f lavfi -i color=c=red:s=32x24 -frames:v 1 \"$2/frame_$(printf %04d $3).png\"' sh {scene} {output} {frame}";
    let mut nodes = submitter_and_renderers(engine, "r", 1);
    let renderer = nodes.pop().unwrap();
    let mut submitter = nodes.pop().unwrap();
    let scene = example("orbit.toml");
    let job = submitter.submit(&[
        scene.to_str().unwrap(),
        "--engine",
        "png",
        "--frames",
        "1-6",
        "--require",
        "r",
        "--encode",
        "mp4",
    ]);
    renderer.wait_job(&job.id, "a first frame on the renderer", |j| {
        j.frames_done >= 1
    });
    let movie = renderer
        .jobs()
        .into_iter()
        .find(|j| j.options.get("encode_of") == Some(&job.id))
        .expect("the encode job reached the renderer with the render job");
    assert_eq!(
        movie.frames_done, 0,
        "nothing encoded before the frames are in"
    );
    submitter.kill9();
    let done = renderer.wait_job(&movie.id, "the movie made by the node that is left", |j| {
        j.status.is_final()
    });
    assert_eq!(
        done.status,
        renderswarm::ledger::JobStatus::Done,
        "{done:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("movie.mp4");
    let bytes = reqwest::blocking::get(format!(
        "{}/api/v1/jobs/{}/frames/1",
        renderer.api, movie.id
    ))
    .unwrap()
    .bytes()
    .unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let (codec, frames, w, h) = probe(&file);
    assert_eq!((codec.as_str(), frames, w, h), ("h264", 6, 32, 24));
}
