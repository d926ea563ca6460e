//! Tests that scene files are treated as untrusted data: each class of bad
//! input is rejected with a message naming the key, nothing panics, and no
//! input makes the parser recurse or allocate without bound.

use super::*;

/// The smallest valid scene; tests append to or edit it.
const MINIMAL: &str = "[camera]\nposition = [0, 1, -5]\n";

fn rejected(text: &str) -> String {
    match Scene::parse(text) {
        Ok(_) => panic!("scene should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `text` is rejected with a message containing every `needle`.
fn assert_rejected(text: &str, needles: &[&str]) {
    let msg = rejected(text);
    for n in needles {
        assert!(msg.contains(n), "message should mention {n:?}:\n{msg}");
    }
}

#[test]
fn minimal_scene_gets_the_documented_defaults() {
    let s = Scene::parse(MINIMAL).unwrap();
    assert_eq!(s.resolution(), (320, 180));
    assert_eq!(s.samples(), 4);
    assert_eq!(s.frame_range(), (1, 1));
}

#[test]
fn bad_toml_keeps_the_line_and_column() {
    assert_rejected("[camera]\nposition = [0, 1,, -5]\n", &["line 2", "column"]);
    assert_rejected("[camera\n", &["line 1"]);
}

#[test]
fn unknown_keys_are_named() {
    assert_rejected(
        &format!("{MINIMAL}[output]\nwidht = 10\n"),
        &["widht", "line 4"],
    );
    assert_rejected(&format!("colour = 1\n{MINIMAL}"), &["colour"]);
    assert_rejected(
        &format!("{MINIMAL}[[sphere]]\ncentre = [0, 0, 0]\nradious = 2\n"),
        &["radious"],
    );
    assert_rejected(
        &format!("{MINIMAL}[[camera.keys]]\nframe = 1\nzoom = 2\n"),
        &["zoom"],
    );
    assert_rejected(
        &format!(
            "{MINIMAL}[[sphere]]\ncentre = [0, 0, 0]\norbit = {{ radius = 1, period = 5, speed = 2 }}\n"
        ),
        &["speed"],
    );
    assert_rejected(&format!("{MINIMAL}[[cone]]\n"), &["cone"]);
}

#[test]
fn wrong_types_and_missing_tables_are_reported() {
    assert_rejected("[output]\nwidth = 10\n", &["camera"]);
    assert_rejected(
        &format!("{MINIMAL}[output]\nwidth = \"wide\"\n"),
        &["width", "line 4"],
    );
    assert_rejected(&format!("{MINIMAL}[output]\nwidth = -3\n"), &["width"]);
    assert_rejected(&format!("{MINIMAL}[output]\nwidth = 10.5\n"), &["width"]);
    assert_rejected("[camera]\nposition = [0, 1]\n", &["position"]);
    assert_rejected(
        &format!("{MINIMAL}[[sphere]]\ncentre = [0, 0, 0]\ninterpolation = \"cubic\"\n"),
        &["cubic"],
    );
}

#[test]
fn resolution_and_samples_are_bounded() {
    let out = |body: &str| format!("{MINIMAL}[output]\n{body}\n");
    assert_rejected(&out("width = 0"), &["output.width", "0"]);
    assert_rejected(&out("height = 0"), &["output.height"]);
    assert_rejected(&out("width = 8193"), &["output.width", "8193"]);
    assert_rejected(
        &out("width = 8192\nheight = 8192"),
        &["output.width", "33554432"],
    );
    assert_rejected(&out("samples = 0"), &["output.samples"]);
    assert_rejected(&out("samples = 1025"), &["output.samples", "1025"]);
    assert_rejected(&out("max_depth = 17"), &["output.max_depth"]);
    assert!(Scene::parse(&out("width = 8192\nheight = 4096\nsamples = 1024")).is_ok());
}

#[test]
fn object_and_light_counts_are_bounded() {
    let spheres = "[[sphere]]\ncentre = [0, 0, 0]\n".repeat(MAX_OBJECTS + 1);
    assert_rejected(&format!("{MINIMAL}{spheres}"), &["10001", "10000"]);
    let lights = "[[light]]\nposition = [0, 5, 0]\n".repeat(MAX_LIGHTS + 1);
    assert_rejected(&format!("{MINIMAL}{lights}"), &["light", "65"]);
    let ok = "[[light]]\nposition = [0, 5, 0]\n".repeat(MAX_LIGHTS);
    assert!(Scene::parse(&format!("{MINIMAL}{ok}")).is_ok());
}

#[test]
fn numbers_must_be_finite() {
    assert_rejected(
        "[camera]\nposition = [nan, 1, -5]\n",
        &["camera.position", "NaN"],
    );
    assert_rejected(
        &format!("{MINIMAL}[[sphere]]\ncentre = [0, inf, 0]\n"),
        &["sphere[1].centre", "inf"],
    );
    assert_rejected(
        &format!("{MINIMAL}[[light]]\nposition = [0, 5, 0]\nintensity = -inf\n"),
        &["light[1].intensity"],
    );
    assert_rejected(&format!("{MINIMAL}[world]\nfog = nan\n"), &["world.fog"]);
    assert_rejected(
        &format!("{MINIMAL}[[sphere]]\ncentre = [0, 1e300, 0]\n"),
        &["sphere[1].centre"],
    );
}

#[test]
fn sizes_and_angles_must_be_in_range() {
    let sphere = |extra: &str| {
        format!("{MINIMAL}[[sphere]]\nname = \"moon\"\ncentre = [0, 0, 0]\n{extra}\n")
    };
    assert_rejected(&sphere("radius = 0"), &["sphere[\"moon\"].radius", "0"]);
    assert_rejected(&sphere("radius = -1"), &["radius", "-1"]);
    assert_rejected(
        &format!("{MINIMAL}[[box]]\ncentre = [0, 0, 0]\nsize = [1, 0, 1]\n"),
        &["box[1].size"],
    );
    assert_rejected(
        "[camera]\nposition = [0, 1, -5]\nfov = 0\n",
        &["camera.fov"],
    );
    assert_rejected(
        "[camera]\nposition = [0, 1, -5]\nfov = 180\n",
        &["camera.fov", "180"],
    );
    assert_rejected(
        "[camera]\nposition = [0, 1, -5]\nup = [0, 0, 0]\n",
        &["camera.up", "zero"],
    );
    assert_rejected(
        &format!("{MINIMAL}[[plane]]\nnormal = [0, 0, 0]\n"),
        &["plane[1].normal"],
    );
    assert_rejected(
        &sphere("orbit = { radius = 1, period = 0 }"),
        &["orbit.period"],
    );
    assert_rejected(
        &sphere("orbit = { radius = -1, period = 5 }"),
        &["orbit.radius"],
    );
}

#[test]
fn materials_are_checked_and_must_exist() {
    let mat = |body: &str| format!("{MINIMAL}[materials.gold]\n{body}\n");
    assert_rejected(
        &mat("colour = [1.5, 0, 0]"),
        &["materials.gold.colour", "1.5"],
    );
    assert_rejected(&mat("reflect = 2"), &["materials.gold.reflect"]);
    assert_rejected(&mat("shininess = 0"), &["materials.gold.shininess"]);
    assert_rejected(
        &mat("checker = [0, 0, 0]\nchecker_size = 0"),
        &["materials.gold.checker_size"],
    );
    let text =
        format!("{MINIMAL}[materials.gold]\n[[sphere]]\ncentre = [0, 0, 0]\nmaterial = \"gld\"\n");
    assert_rejected(&text, &["sphere[1].material", "gld", "gold"]);
}

#[test]
fn keyframes_must_be_sorted_and_unique() {
    let keys = |a: u32, b: u32| {
        format!(
            "[camera]\nkeys = [{{ frame = {a}, position = [0, 1, -5] }}, {{ frame = {b}, position = [0, 2, -5] }}]\n"
        )
    };
    assert!(Scene::parse(&keys(1, 2)).is_ok());
    assert_rejected(&keys(5, 2), &["camera.keys[2].frame", "2", "5"]);
    assert_rejected(&keys(3, 3), &["camera.keys[2].frame", "3"]);
    let bad_key =
        "[camera]\nkeys = [{ frame = 1, position = [0, 1, -5] }, { frame = 2, fov = 200 }]\n";
    assert_rejected(bad_key, &["camera.keys[2].fov", "200"]);
}

#[test]
fn required_values_may_come_from_keys_but_not_from_nowhere() {
    assert_rejected("[camera]\nfov = 40\n", &["camera.position", "required"]);
    assert_rejected(
        &format!("{MINIMAL}[[sphere]]\nradius = 1\n"),
        &["sphere[1].centre"],
    );
    assert_rejected(
        &format!("{MINIMAL}[[light]]\nintensity = 1\n"),
        &["light[1].position"],
    );
    let keyed = format!("{MINIMAL}[[sphere]]\nkeys = [{{ frame = 1, centre = [0, 0, 0] }}]\n");
    assert!(Scene::parse(&keyed).is_ok());
}

#[test]
fn animation_range_must_not_run_backwards() {
    assert_rejected(
        &format!("{MINIMAL}[animation]\nstart = 10\nend = 5\n"),
        &["animation.end", "5"],
    );
    let s = Scene::parse(&format!("{MINIMAL}[animation]\nstart = 3\nend = 9\n")).unwrap();
    assert_eq!(s.frame_range(), (3, 9));
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let text = format!("{MINIMAL}#{}\n", "x".repeat(MAX_SCENE_BYTES));
    assert!(matches!(
        Scene::parse(&text),
        Err(SceneError::TooLarge { .. })
    ));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "{MINIMAL}[world]\nfog = {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(Scene::parse(&deep).is_err());
    let tables = format!("{MINIMAL}x = {}\n", "{ a = ".repeat(50_000));
    assert!(Scene::parse(&tables).is_err());
}

#[test]
fn long_names_are_shortened_in_messages() {
    let name = "n".repeat(100_000);
    let msg = rejected(&format!(
        "{MINIMAL}[[sphere]]\nname = \"{name}\"\ncentre = [0, 0, 0]\nradius = -1\n"
    ));
    assert!(msg.len() < 400, "message of {} bytes", msg.len());
}

#[test]
fn garbage_never_panics() {
    let orbit = include_str!("../../../examples/orbit.toml");
    // Every prefix of a real scene, and every line of it dropped in turn.
    for cut in (0..orbit.len())
        .step_by(97)
        .filter(|c| orbit.is_char_boundary(*c))
    {
        let _ = Scene::parse(&orbit[..cut]);
    }
    let lines: Vec<&str> = orbit.lines().collect();
    for skip in 0..lines.len() {
        let text: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        let _ = Scene::parse(&text.join("\n"));
    }
    for junk in [
        "",
        "\0\0\0",
        "]]]]",
        "[[[[",
        "=",
        "\u{feff}[camera]",
        "a.b.c.d = 1\na.b = 2",
    ] {
        let _ = Scene::parse(junk);
    }
}

/// A small valid scene for mutation: every table and feature, cheap to render.
const SMALL: &str = r#"
[output]
width = 12
height = 8
samples = 2
[world]
fog = 30
[animation]
end = 5
[camera]
position = [0, 2, -6]
keys = [{ frame = 1, look_at = [0, 0, 0] }, { frame = 5, look_at = [1, 0, 0], fov = 30 }]
[materials.m]
checker = [0.1, 0.1, 0.1]
reflect = 0.5
specular = 0.5
[[light]]
position = [-3, 5, -3]
orbit = { radius = 1, period = 4 }
[[plane]]
material = "m"
[[sphere]]
centre = [0, 1, 0]
material = "m"
[[box]]
centre = [1, 0.5, 1]
keys = [{ frame = 2, size = [1, 2, 1] }]
"#;

proptest::proptest! {
    /// Any single-byte change to a valid scene either parses into something
    /// renderable or is rejected; nothing panics.
    #[test]
    fn mutated_scenes_never_panic(pos in 0..SMALL.len(), byte in proptest::prelude::any::<u8>(), frame in 0u32..8) {
        let mut bytes = SMALL.as_bytes().to_vec();
        bytes[pos] = byte;
        if let Ok(text) = String::from_utf8(bytes)
            && let Ok(scene) = Scene::parse(&text)
            && u64::from(scene.resolution().0 * scene.resolution().1) * u64::from(scene.samples()) <= 2_000
        {
            let cancel = std::sync::atomic::AtomicBool::new(false);
            let opts = RenderOptions { threads: 2 };
            let rendered = render_png(&scene, frame, &opts, &cancel, &|_| ());
            proptest::prop_assert!(rendered.is_ok(), "{rendered:?}");
        }
    }

    /// Arbitrary text is parsed or rejected, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Scene::parse(&text);
    }
}
