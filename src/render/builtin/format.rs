//! The scene file as written by hand: the serde shape of the TOML format.
//!
//! These types mirror docs/builtin-scene.md one to one and do no checking
//! beyond what serde does (types, `deny_unknown_fields`), so toml's error
//! messages (with line and column) reach the user for any misspelt key or
//! wrong type. Every other rule lives in `scene.rs`, which turns a
//! [`SceneFile`] into a validated `Scene`. Defaults are applied there too, so
//! the documented default of each key is written down in one place.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[x, y, z]` or `[r, g, b]`; TOML integers are accepted as numbers.
pub type Triple = [f64; 3];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneFile {
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub world: World,
    #[serde(default)]
    pub animation: Animation,
    pub camera: Camera,
    #[serde(default)]
    pub materials: BTreeMap<String, Material>,
    #[serde(default)]
    pub light: Vec<Light>,
    #[serde(default)]
    pub sphere: Vec<Sphere>,
    #[serde(default)]
    pub plane: Vec<Plane>,
    #[serde(default, rename = "box")]
    pub boxes: Vec<BoxShape>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub samples: Option<u32>,
    pub max_depth: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub background: Option<Triple>,
    pub zenith: Option<Triple>,
    pub ambient: Option<Triple>,
    pub fog: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Animation {
    pub start: Option<u32>,
    pub end: Option<u32>,
}

/// How keys are blended: `"linear"`, `"smooth"` or `"step"`.
#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    #[default]
    Linear,
    Smooth,
    Step,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Orbit {
    pub radius: f64,
    pub period: f64,
    #[serde(default)]
    pub phase: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    pub position: Option<Triple>,
    pub look_at: Option<Triple>,
    pub up: Option<Triple>,
    pub fov: Option<f64>,
    #[serde(default)]
    pub interpolation: Interpolation,
    pub orbit: Option<Orbit>,
    #[serde(default)]
    pub keys: Vec<CameraKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraKey {
    pub frame: u32,
    pub position: Option<Triple>,
    pub look_at: Option<Triple>,
    pub fov: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Material {
    #[serde(alias = "color")]
    pub colour: Option<Triple>,
    pub diffuse: Option<f64>,
    pub specular: Option<f64>,
    pub shininess: Option<f64>,
    pub reflect: Option<f64>,
    pub checker: Option<Triple>,
    pub checker_size: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Light {
    pub name: Option<String>,
    pub position: Option<Triple>,
    #[serde(alias = "color")]
    pub colour: Option<Triple>,
    pub intensity: Option<f64>,
    #[serde(default)]
    pub interpolation: Interpolation,
    pub orbit: Option<Orbit>,
    #[serde(default)]
    pub keys: Vec<LightKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightKey {
    pub frame: u32,
    pub position: Option<Triple>,
    pub intensity: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sphere {
    pub name: Option<String>,
    #[serde(alias = "center")]
    pub centre: Option<Triple>,
    pub radius: Option<f64>,
    pub material: Option<String>,
    #[serde(default)]
    pub interpolation: Interpolation,
    pub orbit: Option<Orbit>,
    #[serde(default)]
    pub keys: Vec<SphereKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphereKey {
    pub frame: u32,
    #[serde(alias = "center")]
    pub centre: Option<Triple>,
    pub radius: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plane {
    pub name: Option<String>,
    pub point: Option<Triple>,
    pub normal: Option<Triple>,
    pub material: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxShape {
    pub name: Option<String>,
    #[serde(alias = "center")]
    pub centre: Option<Triple>,
    pub size: Option<Triple>,
    pub material: Option<String>,
    #[serde(default)]
    pub interpolation: Interpolation,
    pub orbit: Option<Orbit>,
    #[serde(default)]
    pub keys: Vec<BoxKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxKey {
    pub frame: u32,
    #[serde(alias = "center")]
    pub centre: Option<Triple>,
    pub size: Option<Triple>,
}
