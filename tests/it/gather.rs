//! Asset gathering at submit: a `.blend` travels with every file it uses.
//!
//! What belongs here: tests of `render::gather` and of `swarm submit
//! scene.blend` gathering, on a real project built with real Blender (a
//! texture in a subfolder, a linked library with its own texture, and a
//! texture by absolute path outside the project, and an image sequence). Under `CI=true` a missing
//! Blender fails them; elsewhere they skip with a note.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use renderswarm::ledger::JobStatus;
use renderswarm::render::gather::gather;

use crate::harness::*;

/// The texture the scene's big plane shows, and its colour (not magenta:
/// that is what Blender shows for a missing texture).
const TEX: &str = "textures/tex.png";
const CYAN: [u8; 3] = [0, 255, 255];

/// A project on disk: `proj/scene.blend` uses `proj/textures/tex.png`
/// (relative), links `proj/lib/props.blend` (which uses `//wood.png`) and
/// uses `far/yellow.png` by absolute path, outside the project, and the
/// image sequence `proj/seq/s_0001.png`...`s_0003.png`.
struct Project {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    scene: PathBuf,
    far: PathBuf,
}

fn make_project(blender: &Path) -> Project {
    const SCRIPT: &str = r#"
import bpy, sys, os, struct, zlib
root, far = sys.argv[sys.argv.index("--") + 1:][:2]
def png(path, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * 8 for _ in range(8))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def textured(obj, name, path, relative):
    m = bpy.data.materials.new(name)
    m.use_nodes = True
    nt = m.node_tree
    img = bpy.data.images.load(path)
    img.filepath = bpy.path.relpath(path) if relative else path
    t = nt.nodes.new("ShaderNodeTexImage")
    t.image, t.interpolation = img, "Closest"
    e = nt.nodes.new("ShaderNodeEmission")
    nt.links.new(t.outputs["Color"], e.inputs["Color"])
    nt.links.new(e.outputs["Emission"], nt.nodes["Material Output"].inputs["Surface"])
    obj.data.materials.append(m)
bpy.context.preferences.filepaths.save_version = 0
png(os.path.join(root, "textures", "tex.png"), (0, 255, 255))
png(os.path.join(root, "lib", "wood.png"), (0, 255, 0))
png(far, (255, 255, 0))
libpath = os.path.join(root, "lib", "props.blend")
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.save_as_mainfile(filepath=libpath)
bpy.ops.mesh.primitive_cube_add(location=(2, 0, 0))
bpy.context.active_object.name = "Prop"
textured(bpy.context.active_object, "Wood", os.path.join(root, "lib", "wood.png"), True)
bpy.ops.wm.save_as_mainfile(filepath=libpath)
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = os.path.join(root, "scene.blend")
bpy.ops.wm.save_as_mainfile(filepath=scene)
s = bpy.context.scene
bpy.ops.mesh.primitive_plane_add(size=2, location=(-1, 0, 0))
textured(bpy.context.active_object, "Tex", os.path.join(root, "textures", "tex.png"), True)
bpy.ops.mesh.primitive_plane_add(size=1, location=(0, 0, 1))
textured(bpy.context.active_object, "Far", far, False)
for i in (1, 2, 3):
    png(os.path.join(root, "seq", "s_%04d.png" % i), (0, 0, 255))
seq = bpy.data.images.load(os.path.join(root, "seq", "s_0001.png"))
seq.source, seq.filepath = "SEQUENCE", "//seq/s_0001.png"
bpy.data.materials["Far"].node_tree.nodes.new("ShaderNodeTexImage").image = seq
with bpy.data.libraries.load(libpath, link=True) as (src, dst):
    dst.objects = ["Prop"]
for o in dst.objects:
    s.collection.objects.link(o)
bpy.data.libraries[0].filepath = "//lib/props.blend"
cam = bpy.data.objects.new("C", bpy.data.cameras.new("C"))
cam.location = (0, 0, 8)
s.collection.objects.link(cam)
s.camera = cam
s.render.engine = "CYCLES"
s.cycles.device = "CPU"
s.cycles.samples = 1
s.cycles.seed = 0
s.cycles.use_denoising = False
s.view_settings.view_transform = "Standard"
s.render.resolution_x = s.render.resolution_y = 64
s.render.resolution_percentage = 100
s.frame_start = s.frame_end = 1
s.render.image_settings.file_format = "PNG"
bpy.ops.wm.save_as_mainfile(filepath=scene, relative_remap=False)
"#;
    exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("proj");
    let far = tmp.path().join("far").join("yellow.png");
    let out = Command::new(blender)
        .args(["-b", "--factory-startup", "--python-exit-code", "1"])
        .args(["--python-expr", SCRIPT, "--"])
        .arg(&dir)
        .arg(&far)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "blender could not make the project: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Project {
        scene: dir.join("scene.blend"),
        dir,
        far,
        _tmp: tmp,
    }
}

/// Every file path the `.blend` uses (its libraries' too), made absolute.
fn paths_used(blender: &Path, blend: &Path) -> Vec<String> {
    const SCRIPT: &str = r#"
import bpy
for p in bpy.utils.blend_paths(absolute=True, packed=False, local=False):
    print("USES", p)
"#;
    let out = Command::new(blender)
        .args(["-b", "--factory-startup", "--disable-autoexec"])
        .arg(blend)
        .args(["--python-exit-code", "1", "--python-expr", SCRIPT])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("USES "))
        .map(|p| {
            Path::new(p)
                .components()
                .collect::<PathBuf>()
                .display()
                .to_string()
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn normalized(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn gather_stages_the_scene_with_every_file_it_uses() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let project = make_project(&blender);
    let before = std::fs::read(&project.scene).unwrap();
    let listing = files_under(&project.dir);

    let g = gather(&blender, &project.scene, None).unwrap();

    assert!(g.missing.is_empty(), "missing: {:?}", g.missing);
    assert_eq!(g.scene_file, "proj/scene.blend");
    let root = g.root();
    let mut staged: Vec<&str> = g.files.iter().map(|f| f.staged.as_str()).collect();
    staged.sort();
    assert_eq!(
        staged,
        [
            "far/yellow.png",
            "proj/lib/props.blend",
            "proj/lib/wood.png",
            "proj/scene.blend",
            "proj/seq/s_0001.png",
            "proj/seq/s_0002.png",
            "proj/seq/s_0003.png",
            "proj/textures/tex.png",
        ]
    );
    for f in &g.files {
        assert!(root.join(&f.staged).is_file(), "{} not staged", f.staged);
    }
    assert_eq!(
        std::fs::read(root.join("far/yellow.png")).unwrap(),
        std::fs::read(&project.far).unwrap()
    );
    let used = paths_used(&blender, &root.join(&g.scene_file));
    assert_eq!(used.len(), 5, "uses: {used:?}");
    for p in &used {
        let p = normalized(Path::new(p));
        assert!(
            p.starts_with(&root) && p.is_file(),
            "the staged scene uses {} outside its bundle {}",
            p.display(),
            root.display()
        );
    }
    assert!(
        std::fs::read(&project.scene).unwrap() == before,
        "the original scene was modified"
    );
    assert_eq!(
        files_under(&project.dir),
        listing,
        "files appeared in the project"
    );
    let staged_root = root.clone();
    drop(g);
    assert!(!staged_root.exists(), "the staging folder outlived its use");
}

#[test]
fn missing_assets_stop_the_submission_unless_allowed() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let project = make_project(&blender);
    std::fs::remove_file(project.dir.join(TEX)).unwrap();
    let node = NodeProc::start(&[]);
    let scene = project.scene.to_str().unwrap();
    // Gathered by the CLI (upload) and by the node (a path on its machine).
    for how in [&["--upload"][..], &[][..]] {
        let mut args = vec!["submit", scene, "--frames", "1"];
        args.extend_from_slice(how);
        let res = node.cli(&args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{how:?}: {stderr}");
        assert!(
            stderr.contains(TEX),
            "{how:?} does not name the texture: {stderr}"
        );
        assert!(!stderr.contains("yellow.png"), "{stderr}");
    }
    assert!(node.jobs().is_empty(), "a job was created");
    for how in ["--upload", "--json"] {
        let res = node.cli(&["submit", scene, "--frames", "1", "--allow-missing", how]);
        assert!(
            res.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    assert_eq!(node.jobs().len(), 2);
}

#[test]
fn without_blender_the_cli_asks_for_the_project_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("scene.blend");
    std::fs::write(&scene, b"BLENDER-v304 not really").unwrap();
    let res = Command::new(swarm_bin())
        .args([
            "submit",
            scene.to_str().unwrap(),
            "--frames",
            "1",
            "--upload",
        ])
        .env("SWARM_API", "http://127.0.0.1:9")
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("project folder") && stderr.contains("--no-gather"),
        "{stderr}"
    );
}

/// The scene travels as a bundle to a node that is not the submitter and
/// renders as it does here: the same pixels, each texture's colour in them
/// (the project's, the library's, and the one from outside the project).
/// Gathered by the CLI (`--upload`) and by the node (a path).
#[test]
fn a_gathered_scene_renders_on_another_node_as_it_does_here() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let project = make_project(&blender);
    let tmp = project.dir.parent().unwrap();
    render_direct(&blender, &project.scene, &tmp.join("direct"), "1");
    let here = decode_png(&tmp.join("direct/frame_0001.png"));
    let nodes = submitter_and_renderers("none=true", "farm", 1);
    for (i, how) in ["--upload", "--json"].into_iter().enumerate() {
        let out = tmp.join(format!("farm{i}"));
        let scene = project.scene.to_str().unwrap();
        let res = nodes[0].cli(&[
            "submit",
            scene,
            "--frames",
            "1",
            how,
            "--require",
            "farm",
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            res.status.success(),
            "{how}: {stderr}\n{}",
            nodes[1].log_text()
        );
        if how == "--upload" {
            assert!(stderr.contains("gathered 8 files"), "{stderr}");
        }
        let farm = decode_png(&out.join("frame_0001.png"));
        assert_eq!((farm.0, farm.1), (64, 64));
        assert_like(&farm.2, &here.2, how);
    }
    for job in nodes[0].jobs() {
        assert_eq!(job.status, JobStatus::Done);
        let renderer = job.tasks.iter().flatten().find_map(|t| t.node.clone());
        assert_eq!(renderer.as_deref(), Some(nodes[1].id.as_str()));
    }
}

/// Pixels within a small tolerance, and every texture's colour present.
fn assert_like(farm: &[u8], here: &[u8], how: &str) {
    assert_eq!(farm.len(), here.len());
    let off = farm.iter().zip(here).filter(|(a, b)| a.abs_diff(**b) > 8);
    assert!(
        off.count() * 100 < farm.len(),
        "{how}: the farm's frame differs"
    );
    let channels = farm.len() / (64 * 64);
    for (name, colour) in [("tex", CYAN), ("wood", [0, 255, 0]), ("far", [255, 255, 0])] {
        let count = farm
            .chunks(channels)
            .filter(|px| px[..3].iter().zip(colour).all(|(a, b)| a.abs_diff(b) < 16))
            .count();
        assert!(
            count > 20,
            "{how}: {name}'s colour is not in the frame ({count} pixels)"
        );
    }
}

/// A file Blender cannot read is refused at submit, saying so.
#[test]
fn an_unreadable_blend_is_refused_with_blenders_reason() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("broken.blend");
    std::fs::write(&scene, b"BLENDER-v304 but nothing after").unwrap();
    let err = gather(&blender, &scene, None).unwrap_err();
    assert!(
        matches!(
            err,
            renderswarm::render::gather::GatherError::Blender { .. }
        ),
        "{err}"
    );
    let res = cli(
        "http://127.0.0.1:9",
        &[
            "submit",
            scene.to_str().unwrap(),
            "--frames",
            "1",
            "--upload",
        ],
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.blend"), "{stderr}");
}

/// Bake folders of simulations never baked (a fluid domain, an ocean, a
/// particle disk cache, made before the scene was first saved) are not
/// missing: the node simulates, as Blender here would.
#[test]
fn unbaked_simulations_are_not_missing() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    const SCRIPT: &str = r#"
import bpy, sys
path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.preferences.filepaths.save_version = 0
bpy.ops.mesh.primitive_cube_add()
bpy.context.active_object.modifiers.new("F", "FLUID").fluid_type = "DOMAIN"
bpy.ops.mesh.primitive_uv_sphere_add()
bpy.ops.object.particle_system_add()
bpy.context.active_object.particle_systems[0].point_cache.use_disk_cache = True
bpy.ops.object.modifier_add(type="OCEAN")
bpy.ops.wm.save_as_mainfile(filepath=path)
"#;
    exclusive();
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("sim.blend");
    let status = Command::new(&blender)
        .args(["-b", "--factory-startup", "--python-exit-code", "1"])
        .args(["--python-expr", SCRIPT, "--"])
        .arg(&scene)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let g = gather(&blender, &scene, None).unwrap();
    assert!(g.missing.is_empty(), "missing: {:?}", g.missing);
    assert_eq!(g.scene_file, "sim.blend");
    assert_eq!(g.files.len(), 1, "{:?}", g.files);
}
