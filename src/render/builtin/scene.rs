//! The validated scene: what `Scene::parse` makes of an untrusted TOML file.
//!
//! Scene files arrive from other machines, so parsing is a border: the text
//! is size-limited, toml and serde reject wrong types and unknown keys (with
//! line and column), and `build` then checks every number against the limits
//! in docs/builtin-scene.md, applies the documented defaults and resolves
//! material names to indices. What comes out can be rendered without further
//! checks: every count is bounded, every number finite and in range. An error
//! names the key (`sphere[2].radius`, counting from 1 in file order, or the
//! object's `name`), the bad value, and the rule it broke.

use super::anim::{Ease, Motion, Orbit, Track};
use super::check::{self, Limit, Owner};
use super::format::{self, SceneFile};
use super::math::{self, Vec3};

/// Largest scene file accepted, in bytes.
pub const MAX_SCENE_BYTES: usize = 8 * 1024 * 1024;
/// Largest image side, in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Largest image area, in pixels (8192 x 4096).
pub const MAX_PIXELS: u64 = 33_554_432;
/// Most anti-aliasing samples per pixel.
pub const MAX_SAMPLES: u32 = 1024;
/// Most mirror bounces.
pub const MAX_BOUNCES: u32 = 16;
/// Most objects (spheres, planes and boxes together).
pub const MAX_OBJECTS: usize = 10_000;
/// Most lights.
pub const MAX_LIGHTS: usize = 64;

/// Errors from [`Scene::parse`].
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error(
        "scene file is {len} bytes, more than the {max} bytes the builtin engine reads; split it or remove unused objects"
    )]
    TooLarge { len: usize, max: usize },
    /// Bad TOML, a wrong type, a missing required table or an unknown key;
    /// toml's message says where (line and column).
    #[error("scene file is not a valid builtin scene: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value that parsed but breaks a rule of the format.
    #[error("scene key `{key}` = {value} is invalid: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// A parsed, validated scene for the builtin engine. Cheap to share across
/// render threads; rendering a frame never mutates it.
#[derive(Debug, Clone)]
pub struct Scene {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) samples: u32,
    pub(super) max_depth: u32,
    pub(super) world: World,
    pub(super) range: (u32, u32),
    pub(super) camera: Camera,
    /// Index 0 is the default material of objects that name none.
    pub(super) materials: Vec<Material>,
    pub(super) lights: Vec<Light>,
    pub(super) objects: Vec<Object>,
}

#[derive(Debug, Clone)]
pub struct World {
    pub background: Vec3,
    pub zenith: Vec3,
    pub ambient: Vec3,
    pub fog: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Camera {
    pub position: Motion,
    pub look_at: Track<Vec3>,
    pub fov: Track<f64>,
    pub up: Vec3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Material {
    pub colour: Vec3,
    pub diffuse: f64,
    pub specular: f64,
    pub shininess: f64,
    pub reflect: f64,
    /// `n·h` below which the specular term `(n·h)^shininess` is under 2^-16
    /// and is skipped (it could not change a pixel, and `pow` is costly).
    pub highlight_cutoff: f64,
    /// Second colour and cell size of a 3D checker pattern.
    pub checker: Option<(Vec3, f64)>,
}

impl Material {
    /// The renderer's fallback should an index ever be out of range (scene
    /// validation makes that impossible; this keeps the renderer panic-free).
    pub const DEFAULT: Material = Material {
        colour: Vec3::new(0.8, 0.8, 0.8),
        diffuse: 0.9,
        specular: 0.0,
        shininess: 32.0,
        reflect: 0.0,
        highlight_cutoff: 1.0,
        checker: None,
    };
}

#[derive(Debug, Clone)]
pub struct Light {
    pub position: Motion,
    pub colour: Vec3,
    pub intensity: Track<f64>,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub shape: Shape,
    /// Index into `Scene::materials`; always in bounds.
    pub material: usize,
}

#[derive(Debug, Clone)]
pub enum Shape {
    Sphere { centre: Motion, radius: Track<f64> },
    Plane { point: Vec3, normal: Vec3 },
    Cuboid { centre: Motion, size: Track<Vec3> },
}

impl Scene {
    /// Parses and validates a scene file. Never panics; every rejection says
    /// which key is wrong and why.
    pub fn parse(text: &str) -> Result<Scene, SceneError> {
        if text.len() > MAX_SCENE_BYTES {
            return Err(SceneError::TooLarge {
                len: text.len(),
                max: MAX_SCENE_BYTES,
            });
        }
        let file: SceneFile = toml::from_str(text)?;
        build(file)
    }

    /// The scene's own animation range, `[animation] start..=end`.
    pub fn frame_range(&self) -> (u32, u32) {
        self.range
    }

    /// Output size in pixels, `(width, height)`.
    pub fn resolution(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Anti-aliasing samples per pixel.
    pub fn samples(&self) -> u32 {
        self.samples
    }
}

fn build(file: SceneFile) -> Result<Scene, SceneError> {
    let (width, height, samples, max_depth) = output(&file.output)?;
    let object_count = file.sphere.len() + file.plane.len() + file.boxes.len();
    if object_count > MAX_OBJECTS {
        let reason = format!(
            "a scene holds at most {MAX_OBJECTS} objects ([[sphere]], [[plane]] and [[box]] together)"
        );
        return Err(check::invalid("sphere + plane + box", object_count, reason));
    }
    if file.light.len() > MAX_LIGHTS {
        let reason = format!("a scene holds at most {MAX_LIGHTS} [[light]] tables");
        return Err(check::invalid("light", file.light.len(), reason));
    }
    let (names, materials) = materials(&file.materials)?;
    let mut objects = Vec::with_capacity(object_count);
    for (i, s) in file.sphere.iter().enumerate() {
        objects.push(sphere(
            &Owner::new("sphere", i, s.name.as_deref()),
            s,
            &names,
        )?);
    }
    for (i, p) in file.plane.iter().enumerate() {
        objects.push(plane(
            &Owner::new("plane", i, p.name.as_deref()),
            p,
            &names,
        )?);
    }
    for (i, b) in file.boxes.iter().enumerate() {
        objects.push(cuboid(&Owner::new("box", i, b.name.as_deref()), b, &names)?);
    }
    let lights = file
        .light
        .iter()
        .enumerate()
        .map(|(i, l)| light(&Owner::new("light", i, l.name.as_deref()), l))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scene {
        width,
        height,
        samples,
        max_depth,
        world: world(&file.world)?,
        range: animation(&file.animation)?,
        camera: camera(&file.camera)?,
        materials,
        lights,
        objects,
    })
}

fn output(o: &format::Output) -> Result<(u32, u32, u32, u32), SceneError> {
    let side = Limit::closed(1.0, f64::from(MAX_SIDE));
    let width = check::count("output.width", o.width.unwrap_or(320), side)?;
    let height = check::count("output.height", o.height.unwrap_or(180), side)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        let reason = format!(
            "width x height = {pixels} pixels, more than {MAX_PIXELS}; lower the resolution"
        );
        return Err(check::invalid("output.width", width, reason));
    }
    let samples = Limit::closed(1.0, f64::from(MAX_SAMPLES));
    let samples = check::count("output.samples", o.samples.unwrap_or(4), samples)?;
    let depth = Limit::closed(0.0, f64::from(MAX_BOUNCES));
    let max_depth = check::count("output.max_depth", o.max_depth.unwrap_or(4), depth)?;
    Ok((width, height, samples, max_depth))
}

fn world(w: &format::World) -> Result<World, SceneError> {
    let background = check::colour("world.background", w.background.unwrap_or([0.7, 0.8, 0.9]))?;
    let zenith = match w.zenith {
        Some(z) => check::colour("world.zenith", z)?,
        None => background,
    };
    let ambient = check::colour("world.ambient", w.ambient.unwrap_or([0.05; 3]))?;
    let fog = match w.fog {
        Some(f) => Some(check::number("world.fog", f, Limit::LENGTH)?),
        None => None,
    };
    Ok(World {
        background,
        zenith,
        ambient,
        fog,
    })
}

fn animation(a: &format::Animation) -> Result<(u32, u32), SceneError> {
    let start = a.start.unwrap_or(1);
    let end = a.end.unwrap_or(start);
    if end < start {
        let reason =
            format!("the animation ends before it starts (start = {start}); make end >= start");
        return Err(check::invalid("animation.end", end, reason));
    }
    Ok((start, end))
}

fn ease(i: format::Interpolation) -> Ease {
    match i {
        format::Interpolation::Linear => Ease::Linear,
        format::Interpolation::Smooth => Ease::Smooth,
        format::Interpolation::Step => Ease::Step,
    }
}

fn orbit(owner: &Owner, o: &Option<format::Orbit>) -> Result<Option<Orbit>, SceneError> {
    let Some(o) = o else { return Ok(None) };
    let radius = check::number(&owner.key("orbit.radius"), o.radius, Limit::ORBIT_RADIUS)?;
    let period = check::number(&owner.key("orbit.period"), o.period, Limit::PERIOD)?;
    let phase = check::number(&owner.key("orbit.phase"), o.phase, Limit::PHASE)?;
    if period.abs() < 1e-3 {
        let reason = "must not be zero: it is the number of frames per turn (at least 0.001; negative turns the other way)";
        return Err(check::invalid(owner.key("orbit.period"), period, reason));
    }
    Ok(Some(Orbit {
        radius,
        period,
        phase,
    }))
}

fn camera(c: &format::Camera) -> Result<Camera, SceneError> {
    let owner = Owner::table("camera");
    let ease = ease(c.interpolation);
    check::key_frames(&owner, c.keys.iter().map(|k| k.frame))?;
    let frames: Vec<u32> = c.keys.iter().map(|k| k.frame).collect();
    let position = check::vec_track(&owner, "position", c.position, &frames, ease, |i| {
        c.keys.get(i).and_then(|k| k.position)
    })?
    .ok_or_else(|| check::missing(&owner, "position"))?;
    let look_at = check::vec_track(&owner, "look_at", c.look_at, &frames, ease, |i| {
        c.keys.get(i).and_then(|k| k.look_at)
    })?
    .unwrap_or_else(|| Track::fixed(Vec3::ZERO));
    let fov = check::num_track(&owner, "fov", c.fov, &frames, ease, Limit::FOV, |i| {
        c.keys.get(i).and_then(|k| k.fov)
    })?
    .unwrap_or_else(|| Track::fixed(45.0));
    let up = check::direction("camera.up", c.up.unwrap_or([0.0, 1.0, 0.0]))?;
    let position = Motion {
        track: position,
        orbit: orbit(&owner, &c.orbit)?,
    };
    Ok(Camera {
        position,
        look_at,
        fov,
        up,
    })
}

fn light(owner: &Owner, l: &format::Light) -> Result<Light, SceneError> {
    let ease = ease(l.interpolation);
    check::key_frames(owner, l.keys.iter().map(|k| k.frame))?;
    let frames: Vec<u32> = l.keys.iter().map(|k| k.frame).collect();
    let position = check::vec_track(owner, "position", l.position, &frames, ease, |i| {
        l.keys.get(i).and_then(|k| k.position)
    })?
    .ok_or_else(|| check::missing(owner, "position"))?;
    let intensity = check::num_track(
        owner,
        "intensity",
        l.intensity,
        &frames,
        ease,
        Limit::INTENSITY,
        |i| l.keys.get(i).and_then(|k| k.intensity),
    )?
    .unwrap_or_else(|| Track::fixed(1.0));
    let colour = check::colour(&owner.key("colour"), l.colour.unwrap_or([1.0; 3]))?;
    let position = Motion {
        track: position,
        orbit: orbit(owner, &l.orbit)?,
    };
    Ok(Light {
        position,
        colour,
        intensity,
    })
}

fn sphere(owner: &Owner, s: &format::Sphere, names: &[&str]) -> Result<Object, SceneError> {
    let ease = ease(s.interpolation);
    check::key_frames(owner, s.keys.iter().map(|k| k.frame))?;
    let frames: Vec<u32> = s.keys.iter().map(|k| k.frame).collect();
    let centre = check::vec_track(owner, "centre", s.centre, &frames, ease, |i| {
        s.keys.get(i).and_then(|k| k.centre)
    })?
    .ok_or_else(|| check::missing(owner, "centre"))?;
    let radius = check::num_track(
        owner,
        "radius",
        s.radius,
        &frames,
        ease,
        Limit::LENGTH,
        |i| s.keys.get(i).and_then(|k| k.radius),
    )?
    .unwrap_or_else(|| Track::fixed(1.0));
    let centre = Motion {
        track: centre,
        orbit: orbit(owner, &s.orbit)?,
    };
    let material = check::material_index(owner, s.material.as_deref(), names)?;
    Ok(Object {
        shape: Shape::Sphere { centre, radius },
        material,
    })
}

fn plane(owner: &Owner, p: &format::Plane, names: &[&str]) -> Result<Object, SceneError> {
    let point = check::coord(&owner.key("point"), p.point.unwrap_or([0.0; 3]))?;
    let normal = check::direction(&owner.key("normal"), p.normal.unwrap_or([0.0, 1.0, 0.0]))?;
    let material = check::material_index(owner, p.material.as_deref(), names)?;
    Ok(Object {
        shape: Shape::Plane { point, normal },
        material,
    })
}

fn cuboid(owner: &Owner, b: &format::BoxShape, names: &[&str]) -> Result<Object, SceneError> {
    let ease = ease(b.interpolation);
    check::key_frames(owner, b.keys.iter().map(|k| k.frame))?;
    let frames: Vec<u32> = b.keys.iter().map(|k| k.frame).collect();
    let centre = check::vec_track(owner, "centre", b.centre, &frames, ease, |i| {
        b.keys.get(i).and_then(|k| k.centre)
    })?
    .ok_or_else(|| check::missing(owner, "centre"))?;
    let size = check::size_track(owner, b.size, &frames, ease, |i| {
        b.keys.get(i).and_then(|k| k.size)
    })?
    .unwrap_or_else(|| Track::fixed(Vec3::ONE));
    let centre = Motion {
        track: centre,
        orbit: orbit(owner, &b.orbit)?,
    };
    let material = check::material_index(owner, b.material.as_deref(), names)?;
    Ok(Object {
        shape: Shape::Cuboid { centre, size },
        material,
    })
}

/// The material table: index 0 is the default, then the named materials in
/// name order (the map is sorted), so indices are stable for a given file.
fn materials(
    raw: &std::collections::BTreeMap<String, format::Material>,
) -> Result<(Vec<&str>, Vec<Material>), SceneError> {
    let mut names = vec![""];
    let mut out = vec![material(&Owner::table("materials"), None)?];
    for (name, m) in raw {
        let owner = Owner::table(&format!("materials.{}", check::shorten(name)));
        names.push(name.as_str());
        out.push(material(&owner, Some(m))?);
    }
    Ok((names, out))
}

fn material(owner: &Owner, m: Option<&format::Material>) -> Result<Material, SceneError> {
    let get =
        |f: fn(&format::Material) -> Option<f64>, default: f64| m.and_then(f).unwrap_or(default);
    let colour = m.and_then(|m| m.colour).unwrap_or([0.8; 3]);
    let checker = match m.and_then(|m| m.checker) {
        Some(c) => {
            let c = check::colour(&owner.key("checker"), c)?;
            let size = get(|m| m.checker_size, 1.0);
            Some((
                c,
                check::number(&owner.key("checker_size"), size, Limit::LENGTH)?,
            ))
        }
        None => None,
    };
    let shininess = check::number(
        &owner.key("shininess"),
        get(|m| m.shininess, 32.0),
        Limit::SHININESS,
    )?;
    Ok(Material {
        colour: check::colour(&owner.key("colour"), colour)?,
        diffuse: check::number(&owner.key("diffuse"), get(|m| m.diffuse, 0.9), Limit::UNIT)?,
        specular: check::number(
            &owner.key("specular"),
            get(|m| m.specular, 0.0),
            Limit::UNIT,
        )?,
        shininess,
        reflect: check::number(&owner.key("reflect"), get(|m| m.reflect, 0.0), Limit::UNIT)?,
        highlight_cutoff: highlight_cutoff(shininess),
        checker,
    })
}

/// See [`Material::highlight_cutoff`].
fn highlight_cutoff(shininess: f64) -> f64 {
    math::pow(1.0 / 65_536.0, 1.0 / shininess)
}
