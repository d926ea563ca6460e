//! The ray tracer: one frame of a scene, posed, intersected and shaded.
//!
//! `FrameView::new` evaluates every animation track once for the frame, so
//! the per-pixel code only reads plain geometry. Shading is Whitted-style:
//! ambient + Lambert diffuse + Blinn specular from each point light that a
//! shadow ray reaches, plus a mirror ray up to the scene's `max_depth`, with
//! optional distance fog. A pixel is the mean of `samples` camera rays at
//! fixed sub-pixel positions (an R2 low-discrepancy sequence, rotated by a
//! hash of the pixel's coordinates), so its value depends on (scene, frame,
//! x, y) only: not on the thread that renders it, nor on any RNG state.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::math::{self, Ray, Vec3};
use super::scene::{Material, Scene, Shape};
use super::shapes::{Cuboid, Hit, Plane, Solids, Sphere};

/// Pixels rendered between two looks at the cancel flag within a row.
const CANCEL_CHECK_PIXELS: usize = 64;
/// R2 sequence steps (1/g and 1/g² for the plastic number g): well spread
/// sub-pixel positions for any sample count.
const R2_A1: f64 = 0.754_877_666_246_692_7;
const R2_A2: f64 = 0.569_840_290_998_053_3;

struct Lamp {
    position: Vec3,
    /// Colour times intensity.
    rgb: Vec3,
}

struct Eye {
    origin: Vec3,
    forward: Vec3,
    right: Vec3,
    up: Vec3,
    half_width: f64,
    half_height: f64,
}

/// A scene posed at one frame, ready to shade pixels from any thread.
pub struct FrameView<'a> {
    scene: &'a Scene,
    eye: Eye,
    lamps: Vec<Lamp>,
    solids: Solids,
}

impl<'a> FrameView<'a> {
    pub fn new(scene: &'a Scene, frame: u32) -> FrameView<'a> {
        let t = f64::from(frame);
        let lamps = scene
            .lights
            .iter()
            .map(|l| Lamp {
                position: l.position.at(t),
                rgb: l.colour * l.intensity.at(t),
            })
            .collect();
        let solids = pose(scene, t);
        FrameView {
            scene,
            eye: eye(scene, t),
            lamps,
            solids,
        }
    }

    /// Renders row `y` into `row` (3 bytes per pixel). Returns false, leaving
    /// the row incomplete, as soon as `cancel` is seen set.
    pub fn render_row(&self, y: u32, row: &mut [u8], cancel: &AtomicBool) -> bool {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            if x % CANCEL_CHECK_PIXELS == 0 && cancel.load(Ordering::Relaxed) {
                return false;
            }
            let rgb = self.pixel(u32::try_from(x).unwrap_or(u32::MAX), y);
            px.copy_from_slice(&rgb);
        }
        true
    }

    /// The 8-bit sRGB value of pixel (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let n = self.scene.samples.max(1);
        let (fx, fy) = (f64::from(x), f64::from(y));
        let mut sum = Vec3::ZERO;
        if n == 1 {
            sum = self.trace(&self.camera_ray(fx + 0.5, fy + 0.5), 0);
        } else {
            let h = math::hash32(x ^ math::hash32(y ^ 0x9e37_79b9));
            let ox = math::unit_from_hash(h);
            let oy = math::unit_from_hash(math::hash32(h ^ 0x68bc_21eb));
            for i in 0..n {
                let fi = f64::from(i);
                let sx = fract(ox + fi * R2_A1);
                let sy = fract(oy + fi * R2_A2);
                sum += self.trace(&self.camera_ray(fx + sx, fy + sy), 0);
            }
        }
        let c = sum * (1.0 / f64::from(n));
        [to_srgb8(c.x), to_srgb8(c.y), to_srgb8(c.z)]
    }

    /// The ray through the image point (px, py), in pixels from the top left.
    fn camera_ray(&self, px: f64, py: f64) -> Ray {
        let e = &self.eye;
        let w = f64::from(self.scene.width);
        let h = f64::from(self.scene.height);
        let sx = (2.0 * px / w - 1.0) * e.half_width;
        let sy = (1.0 - 2.0 * py / h) * e.half_height;
        let dir = (e.forward + e.right * sx + e.up * sy)
            .try_normalized()
            .unwrap_or(e.forward);
        Ray {
            origin: e.origin,
            dir,
        }
    }

    fn trace(&self, ray: &Ray, depth: u32) -> Vec3 {
        let Some(hit) = self.solids.nearest(ray, f64::INFINITY) else {
            return self.sky(ray.dir);
        };
        let colour = self.shade(ray, &hit, depth);
        match self.scene.world.fog {
            Some(fog) => {
                let keep = math::exp(-hit.t / fog);
                colour * keep + self.scene.world.background * (1.0 - keep)
            }
            None => colour,
        }
    }

    fn sky(&self, dir: Vec3) -> Vec3 {
        let w = &self.scene.world;
        w.background.lerp(w.zenith, dir.y.clamp(0.0, 1.0))
    }

    fn material(&self, index: usize) -> &Material {
        self.scene
            .materials
            .get(index)
            .unwrap_or(&Material::DEFAULT)
    }

    fn shade(&self, ray: &Ray, hit: &Hit, depth: u32) -> Vec3 {
        let m = self.material(hit.material);
        let n = if hit.normal.dot(ray.dir) > 0.0 {
            -hit.normal
        } else {
            hit.normal
        };
        let base = surface_colour(m, hit.point, hit.normal);
        let eps = 1e-6 * hit.point.max_abs().max(1.0);
        let p = hit.point + n * eps;
        let mut diffuse = self.scene.world.ambient.mul_elem(base);
        let mut specular = Vec3::ZERO;
        for lamp in &self.lamps {
            let to_lamp = lamp.position - p;
            let dist = to_lamp.length();
            let Some(l) = to_lamp.try_normalized() else {
                continue;
            };
            let ndl = n.dot(l);
            if ndl <= 0.0 || self.solids.occluded(&Ray { origin: p, dir: l }, dist) {
                continue;
            }
            diffuse += lamp.rgb.mul_elem(base) * (m.diffuse * ndl);
            specular += lamp.rgb * highlight(m, n, l, ray.dir);
        }
        let mut colour = diffuse * (1.0 - m.reflect) + specular;
        if m.reflect > 0.0 {
            let mirror = Ray {
                origin: p,
                dir: ray.dir.reflect(n),
            };
            let seen = if depth < self.scene.max_depth {
                self.trace(&mirror, depth + 1)
            } else {
                self.sky(mirror.dir)
            };
            colour += seen * m.reflect;
        }
        colour
    }
}

/// The Blinn-Phong specular factor for light direction `l` seen along `view`.
fn highlight(m: &Material, n: Vec3, l: Vec3, view: Vec3) -> f64 {
    if m.specular <= 0.0 {
        return 0.0;
    }
    match (l - view).try_normalized() {
        Some(half) if n.dot(half) > m.highlight_cutoff => {
            m.specular * math::pow(n.dot(half), m.shininess)
        }
        _ => 0.0,
    }
}

/// Evaluates every object's animation at time `t`.
fn pose(scene: &Scene, t: f64) -> Solids {
    let mut solids = Solids::default();
    for o in &scene.objects {
        let material = o.material;
        match &o.shape {
            Shape::Sphere { centre, radius } => {
                let (centre, radius) = (centre.at(t), radius.at(t));
                solids.spheres.push(Sphere {
                    centre,
                    radius,
                    material,
                });
            }
            Shape::Plane { point, normal } => {
                let (point, normal) = (*point, *normal);
                solids.planes.push(Plane {
                    point,
                    normal,
                    material,
                });
            }
            Shape::Cuboid { centre, size } => {
                let (c, half) = (centre.at(t), size.at(t) * 0.5);
                solids.boxes.push(Cuboid {
                    min: c - half,
                    max: c + half,
                    material,
                });
            }
        }
    }
    solids
}

fn eye(scene: &Scene, t: f64) -> Eye {
    let cam = &scene.camera;
    let origin = cam.position.at(t);
    let forward = (cam.look_at.at(t) - origin)
        .try_normalized()
        .unwrap_or(Vec3::new(0.0, 0.0, 1.0));
    // Left-handed, y up (as in POV-Ray): looking along +z, +x is to the
    // right. Looking straight along `up` leaves no horizon: use another axis.
    let right = cam
        .up
        .cross(forward)
        .try_normalized()
        .or_else(|| Vec3::new(0.0, 0.0, 1.0).cross(forward).try_normalized())
        .or_else(|| Vec3::new(1.0, 0.0, 0.0).cross(forward).try_normalized())
        .unwrap_or(Vec3::new(1.0, 0.0, 0.0));
    let up = forward.cross(right);
    let fov_radians = cam.fov.at(t) * (std::f64::consts::PI / 180.0);
    let half_height = math::tan(fov_radians * 0.5);
    let aspect = f64::from(scene.width) / f64::from(scene.height);
    Eye {
        origin,
        forward,
        right,
        up,
        half_width: half_height * aspect,
        half_height,
    }
}

/// The material's colour at `point`, with its 3D checker if it has one. The
/// point is nudged a hair inside the surface so that a face lying exactly on
/// a cell boundary (a floor at y = 0) shows one cell, not rounding noise.
fn surface_colour(m: &Material, point: Vec3, outward: Vec3) -> Vec3 {
    let Some((other, size)) = m.checker else {
        return m.colour;
    };
    let q = point * (1.0 / size) - outward * 1e-4;
    let cells = q.x.floor() + q.y.floor() + q.z.floor();
    // `as` saturates (and maps NaN to 0), so absurd coordinates cannot panic.
    if (cells as i64).rem_euclid(2) == 0 {
        m.colour
    } else {
        other
    }
}

fn fract(v: f64) -> f64 {
    v - v.floor()
}

/// Linear light to an 8-bit sRGB code value: the nearest code to the sRGB
/// encoding of `linear` (clamped to [0, 1]; NaN becomes 0). Implemented as a
/// search among the 255 linear values where the code steps up, which is
/// exact and saves three `pow` calls per pixel.
fn to_srgb8(linear: f64) -> u8 {
    let steps = SRGB_STEPS.get_or_init(srgb_steps);
    u8::try_from(steps.partition_point(|t| *t <= linear)).unwrap_or(u8::MAX)
}

static SRGB_STEPS: OnceLock<[f64; 255]> = OnceLock::new();

/// `steps[k - 1]` is the linear value whose encoding is exactly `(k - 0.5) / 255`.
fn srgb_steps() -> [f64; 255] {
    let mut steps = [0.0; 255];
    for (i, t) in steps.iter_mut().enumerate() {
        let encoded = (i as f64 + 0.5) / 255.0;
        *t = if encoded <= 0.040_45 {
            encoded / 12.92
        } else {
            math::pow((encoded + 0.055) / 1.055, 2.4)
        };
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srgb_encoding_matches_reference_points() {
        assert_eq!(to_srgb8(0.0), 0);
        assert_eq!(to_srgb8(1.0), 255);
        // The search must agree with the direct formula away from exact ties.
        for i in 0..=10_000 {
            let v = f64::from(i) / 10_000.0 + 1e-9;
            let direct = if v <= 0.003_130_8 {
                12.92 * v
            } else {
                1.055 * math::pow(v, 1.0 / 2.4) - 0.055
            };
            assert_eq!(to_srgb8(v), (direct * 255.0 + 0.5).floor() as u8, "at {v}");
        }
        assert_eq!(to_srgb8(f64::NAN), 0);
        assert_eq!(to_srgb8(7.0), 255);
    }

    #[test]
    fn checker_alternates_and_is_stable_on_a_floor_at_zero() {
        let m = Material {
            colour: Vec3::ONE,
            diffuse: 1.0,
            specular: 0.0,
            shininess: 1.0,
            reflect: 0.0,
            highlight_cutoff: 0.0,
            checker: Some((Vec3::ZERO, 1.0)),
        };
        let a = surface_colour(&m, Vec3::new(0.5, 0.0, 0.5), Vec3::UP);
        let noisy = surface_colour(&m, Vec3::new(0.5, 1e-15, 0.5), Vec3::UP);
        let b = surface_colour(&m, Vec3::new(1.5, 0.0, 0.5), Vec3::UP);
        assert_eq!(a, noisy);
        assert_ne!(a, b);
    }
}
