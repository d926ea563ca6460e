//! Tests of command templates: splitting, placeholders, validation, substitution.

use std::path::Path;

use super::*;

fn words(source: &str) -> Vec<String> {
    split(source).unwrap()
}

fn expand(source: &str, scene: &str, frame: u32) -> Vec<String> {
    let t = Template::parse("mycmd", source).unwrap();
    let values = Values {
        scene: Path::new(scene),
        output: Path::new("/out/t1"),
        frame,
        start: 3,
        end: 5,
    };
    let inv = t.invocation(&values, Path::new("/work")).unwrap();
    let mut all = vec![inv.program.into_string().unwrap()];
    all.extend(inv.args.into_iter().map(|a| a.into_string().unwrap()));
    all
}

fn parse_err(source: &str) -> String {
    Template::parse("mycmd", source).unwrap_err().to_string()
}

#[test]
fn splitting_follows_shell_quoting() {
    assert_eq!(words("a  b\tc"), ["a", "b", "c"]);
    assert_eq!(
        words(r#"sh -c 'echo "$1" > x' sh"#),
        ["sh", "-c", r#"echo "$1" > x"#, "sh"]
    );
    assert_eq!(words(r#"a "b c" d"#), ["a", "b c", "d"]);
    assert_eq!(words(r#"a "x\"y\\z\n" b"#), ["a", r#"x"y\z\n"#, "b"]);
    assert_eq!(words(r"a\ b c\'d"), ["a b", "c'd"]);
    assert_eq!(words(r#"a '' "" b"#), ["a", "", "", "b"]);
    assert_eq!(words("a'b'\"c\"d"), ["abcd"]);
    assert_eq!(words("   "), Vec::<String>::new());
}

#[test]
fn placeholders_are_filled_inside_arguments() {
    assert_eq!(
        expand(
            "render --in {scene} --out {output}/frame_{frame:04}.exr -n {frame}",
            "/w/my shot.scn",
            7
        ),
        [
            "render",
            "--in",
            "/w/my shot.scn",
            "--out",
            "/out/t1/frame_0007.exr",
            "-n",
            "7"
        ]
    );
    assert_eq!(
        expand(
            "render -s {start} -e {end:05} -o '{output}/frame_####' {scene}",
            "/w/a.scn",
            3
        ),
        [
            "render",
            "-s",
            "3",
            "-e",
            "00005",
            "-o",
            "/out/t1/frame_####",
            "/w/a.scn"
        ]
    );
    assert_eq!(
        expand("awk '{{print $1}}' {scene}", "/w/a", 1),
        ["awk", "{print $1}", "/w/a"]
    );
}

#[test]
fn frame_decides_how_often_the_command_runs() {
    assert!(
        Template::parse("a", "r {scene} {frame}")
            .unwrap()
            .per_frame()
    );
    assert!(
        Template::parse("a", "r {scene} {frame:04}")
            .unwrap()
            .per_frame()
    );
    assert!(
        !Template::parse("a", "r {scene} {start} {end}")
            .unwrap()
            .per_frame()
    );
}

#[test]
fn bad_templates_are_refused_naming_the_template() {
    let err = parse_err("render {scene} {frames}");
    assert!(
        err.contains("mycmd") && err.contains("render {scene} {frames}"),
        "{err}"
    );
    assert!(err.contains("unknown placeholder `{frames}`"), "{err}");
    assert!(parse_err("render 'oops").contains("single quote"));
    assert!(parse_err("render \"oops").contains("double quote"));
    assert!(parse_err("render oops\\").contains("backslash"));
    assert!(parse_err("").contains("is empty"));
    assert!(parse_err("  ").contains("is empty"));
    assert!(parse_err("render {scene").contains("without `}`"));
    assert!(parse_err("render scene}").contains("without `{`"));
    assert!(parse_err("{scene} --render").contains("starts with a placeholder"));
    assert!(parse_err("r {frame:4}").contains("{frame:04}"));
    assert!(parse_err("r {scene:04}").contains("only numbers"));
}

#[test]
fn reserved_and_malformed_names_are_refused() {
    for name in ["builtin", "blender"] {
        let err = Template::parse(name, "r {scene}").unwrap_err().to_string();
        assert!(err.contains("reserved"), "{err}");
    }
    for name in ["", "has space", "a/b", &"x".repeat(65)] {
        assert!(Template::parse(name, "r {scene}").is_err(), "{name:?}");
    }
    assert!(Template::parse("my-cmd_2.0", "r {scene}").is_ok());
}

#[test]
fn shell_scripts_get_only_shell_safe_paths() {
    let source = "sh -c 'render {scene} > {output}/frame_{frame:04}.png'";
    assert_eq!(
        expand(source, "/w/shot_1.scn", 2),
        ["sh", "-c", "render /w/shot_1.scn > /out/t1/frame_0002.png"]
    );
    let t = Template::parse("mycmd", source).unwrap();
    for scene in ["/w/a b.scn", "/w/$(rm -rf ~).scn", "/w/a;b", "/w/a'b"] {
        let values = Values {
            scene: Path::new(scene),
            output: Path::new("/o"),
            frame: 1,
            start: 1,
            end: 1,
        };
        let err = t.invocation(&values, Path::new("/w")).unwrap_err();
        assert!(err.contains("positional argument"), "{scene}: {err}");
    }
    // As a positional argument the same path is fine: the shell never parses it.
    assert_eq!(
        expand(r#"bash -ec 'render "$1"' sh {scene}"#, "/w/$(x) y.scn", 1),
        ["bash", "-ec", r#"render "$1""#, "sh", "/w/$(x) y.scn"]
    );
    // Not a shell: no restriction.
    assert_eq!(expand("render {scene}", "/w/a;b", 1), ["render", "/w/a;b"]);
}

#[test]
fn complaints_prefer_error_lines() {
    let mut c = Complaint::default();
    c.hear("loading");
    c.hear("ERROR: no camera");
    c.hear("cleaning up");
    assert_eq!(c.best().as_deref(), Some("ERROR: no camera"));
    let mut c = Complaint::default();
    c.hear("something odd");
    c.hear("   ");
    assert_eq!(c.best().as_deref(), Some("something odd"));
}
