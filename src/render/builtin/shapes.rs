//! Ray intersection with the three primitive shapes: sphere, plane, box.
//!
//! Each test finds the nearest distance in `(T_MIN, limit)`, so one function
//! serves both the nearest-hit search (the limit shrinks as hits are found)
//! and shadow rays (the limit is the distance to the light). Solids are kept
//! in one list per kind, so the hot loops need no dispatch; ties between
//! equally near surfaces go to the first found, the same way every run.
//! Only basic arithmetic and `sqrt`: deterministic.

use super::math::{Ray, Vec3};

/// Smallest ray distance counted as a hit (guards against self-intersection).
const T_MIN: f64 = 1e-9;

/// A sphere posed at one frame.
pub struct Sphere {
    pub centre: Vec3,
    pub radius: f64,
    pub material: usize,
}

/// An infinite plane through `point`; `normal` is a unit vector.
pub struct Plane {
    pub point: Vec3,
    pub normal: Vec3,
    pub material: usize,
}

/// An axis-aligned box posed at one frame.
pub struct Cuboid {
    pub min: Vec3,
    pub max: Vec3,
    pub material: usize,
}

/// The nearest surface a ray meets.
pub struct Hit {
    pub t: f64,
    pub point: Vec3,
    /// Points out of the solid (for a plane: along its normal).
    pub normal: Vec3,
    pub material: usize,
}

/// Every solid of a frame, grouped by kind so each loop is tight.
#[derive(Default)]
pub struct Solids {
    pub spheres: Vec<Sphere>,
    pub planes: Vec<Plane>,
    pub boxes: Vec<Cuboid>,
}

enum Found {
    Sphere(usize),
    Plane(usize),
    Cuboid(usize, Vec3),
}

impl Solids {
    /// The nearest hit with `T_MIN < t < limit`.
    pub fn nearest(&self, ray: &Ray, mut limit: f64) -> Option<Hit> {
        let mut found = None;
        for (i, s) in self.spheres.iter().enumerate() {
            if let Some(t) = hit_sphere(s.centre, s.radius, ray, limit) {
                (limit, found) = (t, Some(Found::Sphere(i)));
            }
        }
        for (i, p) in self.planes.iter().enumerate() {
            if let Some(t) = hit_plane(p.point, p.normal, ray, limit) {
                (limit, found) = (t, Some(Found::Plane(i)));
            }
        }
        for (i, b) in self.boxes.iter().enumerate() {
            if let Some((t, normal)) = hit_box(b.min, b.max, ray, limit) {
                (limit, found) = (t, Some(Found::Cuboid(i, normal)));
            }
        }
        let point = ray.at(limit);
        let (normal, material) = match found? {
            Found::Sphere(i) => {
                let s = self.spheres.get(i)?;
                ((point - s.centre) * (1.0 / s.radius), s.material)
            }
            Found::Plane(i) => self.planes.get(i).map(|p| (p.normal, p.material))?,
            Found::Cuboid(i, normal) => (normal, self.boxes.get(i)?.material),
        };
        Some(Hit {
            t: limit,
            point,
            normal,
            material,
        })
    }

    /// Whether anything lies on the ray closer than `dist` (a shadow ray).
    pub fn occluded(&self, ray: &Ray, dist: f64) -> bool {
        self.spheres
            .iter()
            .any(|s| hit_sphere(s.centre, s.radius, ray, dist).is_some())
            || self
                .planes
                .iter()
                .any(|p| hit_plane(p.point, p.normal, ray, dist).is_some())
            || self
                .boxes
                .iter()
                .any(|b| hit_box(b.min, b.max, ray, dist).is_some())
    }
}

fn hit_plane(point: Vec3, normal: Vec3, ray: &Ray, limit: f64) -> Option<f64> {
    let denom = normal.dot(ray.dir);
    if denom.abs() < 1e-12 {
        return None;
    }
    let t = (point - ray.origin).dot(normal) / denom;
    (t > T_MIN && t < limit).then_some(t)
}

fn hit_sphere(centre: Vec3, radius: f64, ray: &Ray, limit: f64) -> Option<f64> {
    let oc = ray.origin - centre;
    let b = oc.dot(ray.dir);
    let c = oc.dot(oc) - radius * radius;
    // Outside the sphere and heading away from it: the common quick miss.
    if c > 0.0 && b > 0.0 {
        return None;
    }
    let disc = b * b - c;
    if disc < 0.0 {
        return None;
    }
    let s = disc.sqrt();
    let near = -b - s;
    if near > T_MIN && near < limit {
        return Some(near);
    }
    let far = -b + s;
    (far > T_MIN && far < limit).then_some(far)
}

fn component(v: Vec3, axis: usize) -> f64 {
    match axis {
        0 => v.x,
        1 => v.y,
        _ => v.z,
    }
}

fn unit_axis(axis: usize, sign: f64) -> Vec3 {
    match axis {
        0 => Vec3::new(sign, 0.0, 0.0),
        1 => Vec3::new(0.0, sign, 0.0),
        _ => Vec3::new(0.0, 0.0, sign),
    }
}

/// Slab test for an axis-aligned box; hits the far side from inside.
fn hit_box(min: Vec3, max: Vec3, ray: &Ray, limit: f64) -> Option<(f64, Vec3)> {
    let (mut near, mut far) = (f64::NEG_INFINITY, f64::INFINITY);
    let (mut near_axis, mut far_axis) = (0, 0);
    for axis in 0..3 {
        let d = component(ray.dir, axis);
        let o = component(ray.origin, axis);
        let inv = 1.0 / d;
        let mut t0 = (component(min, axis) - o) * inv;
        let mut t1 = (component(max, axis) - o) * inv;
        if t0 > t1 {
            std::mem::swap(&mut t0, &mut t1);
        }
        if t0 > near {
            near = t0;
            near_axis = axis;
        }
        if t1 < far {
            far = t1;
            far_axis = axis;
        }
    }
    if near > far || far <= T_MIN {
        return None;
    }
    let sign = |axis| {
        if component(ray.dir, axis) > 0.0 {
            1.0
        } else {
            -1.0
        }
    };
    if near > T_MIN {
        (near < limit).then(|| (near, unit_axis(near_axis, -sign(near_axis))))
    } else {
        (far < limit).then(|| (far, unit_axis(far_axis, sign(far_axis))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ray(origin: Vec3, dir: Vec3) -> Ray {
        Ray { origin, dir }
    }

    fn one_sphere() -> Solids {
        let spheres = vec![Sphere {
            centre: Vec3::ZERO,
            radius: 1.0,
            material: 7,
        }];
        Solids {
            spheres,
            ..Solids::default()
        }
    }

    #[test]
    fn sphere_is_hit_from_outside_and_inside() {
        let s = one_sphere();
        let outside = ray(Vec3::new(0.0, 0.0, -5.0), Vec3::new(0.0, 0.0, 1.0));
        let hit = s.nearest(&outside, f64::INFINITY).unwrap();
        assert_eq!(
            (hit.t, hit.normal, hit.material),
            (4.0, Vec3::new(0.0, 0.0, -1.0), 7)
        );
        let inside = ray(Vec3::ZERO, Vec3::new(0.0, 0.0, 1.0));
        assert_eq!(s.nearest(&inside, f64::INFINITY).unwrap().t, 1.0);
        assert!(!s.occluded(&outside, 3.0), "the limit bounds shadow rays");
        assert!(s.occluded(&outside, 4.5));
    }

    #[test]
    fn box_reports_the_face_it_enters_and_the_nearest_solid_wins() {
        let mut s = one_sphere();
        s.boxes.push(Cuboid {
            min: Vec3::new(-2.0, 2.0, -2.0),
            max: Vec3::new(2.0, 3.0, 2.0),
            material: 3,
        });
        let down = ray(Vec3::new(0.2, 5.0, 0.1), Vec3::new(0.0, -1.0, 0.0));
        let hit = s.nearest(&down, f64::INFINITY).unwrap();
        assert_eq!((hit.t, hit.normal, hit.material), (2.0, Vec3::UP, 3));
        let from_inside = ray(Vec3::new(0.0, 2.5, 0.0), Vec3::new(1.0, 0.0, 0.0));
        let hit = s.nearest(&from_inside, f64::INFINITY).unwrap();
        assert_eq!((hit.t, hit.normal), (2.0, Vec3::new(1.0, 0.0, 0.0)));
        let miss = ray(Vec3::new(3.0, 5.0, 0.0), Vec3::new(0.0, -1.0, 0.0));
        assert!(s.nearest(&miss, f64::INFINITY).is_none());
    }

    #[test]
    fn plane_is_missed_by_parallel_rays() {
        let planes = vec![Plane {
            point: Vec3::ZERO,
            normal: Vec3::UP,
            material: 0,
        }];
        let s = Solids {
            planes,
            ..Solids::default()
        };
        assert!(
            s.nearest(&ray(Vec3::UP, Vec3::new(1.0, 0.0, 0.0)), f64::INFINITY)
                .is_none()
        );
        let down = ray(Vec3::new(0.0, 2.0, 0.0), Vec3::new(0.0, -1.0, 0.0));
        assert_eq!(s.nearest(&down, f64::INFINITY).unwrap().t, 2.0);
    }
}
