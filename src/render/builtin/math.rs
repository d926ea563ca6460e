//! Vectors, rays and the few scalar helpers the tracer needs.
//!
//! Everything here is IEEE basic arithmetic (`+ - * /`, `sqrt`, `floor`), which
//! is correctly rounded and therefore identical on every machine. Rust never
//! contracts `a * b + c` into a fused multiply-add on its own, and this file
//! never asks for one (`mul_add`), so a pixel's value does not depend on the
//! CPU that computes it. Transcendental functions come from `libm` (pure Rust)
//! and are wrapped here so the rest of the engine never reaches for `f64::sin`.

use std::ops::{Add, AddAssign, Mul, Neg, Sub};

/// A point, direction or linear RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

impl Vec3 {
    pub const ZERO: Vec3 = Vec3::new(0.0, 0.0, 0.0);
    pub const ONE: Vec3 = Vec3::new(1.0, 1.0, 1.0);
    #[cfg(test)]
    pub const UP: Vec3 = Vec3::new(0.0, 1.0, 0.0);

    pub const fn new(x: f64, y: f64, z: f64) -> Vec3 {
        Vec3 { x, y, z }
    }

    pub fn from_array(a: [f64; 3]) -> Vec3 {
        Vec3::new(a[0], a[1], a[2])
    }

    pub fn dot(self, o: Vec3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    pub fn cross(self, o: Vec3) -> Vec3 {
        Vec3::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }

    pub fn length(self) -> f64 {
        self.dot(self).sqrt()
    }

    /// The unit vector along `self`, or `None` when `self` is (nearly) zero or
    /// not finite, so callers choose a fallback instead of spreading NaN.
    pub fn try_normalized(self) -> Option<Vec3> {
        let len = self.length();
        if len > 1e-12 && len.is_finite() {
            Some(self * (1.0 / len))
        } else {
            None
        }
    }

    /// Component-wise product (colour times colour).
    pub fn mul_elem(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x * o.x, self.y * o.y, self.z * o.z)
    }

    /// `self` at `t = 0`, `o` at `t = 1`.
    pub fn lerp(self, o: Vec3, t: f64) -> Vec3 {
        self + (o - self) * t
    }

    pub fn max_abs(self) -> f64 {
        self.x.abs().max(self.y.abs()).max(self.z.abs())
    }

    /// The mirror image of direction `self` about the unit normal `n`.
    pub fn reflect(self, n: Vec3) -> Vec3 {
        self - n * (2.0 * self.dot(n))
    }
}

impl Add for Vec3 {
    type Output = Vec3;
    fn add(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl AddAssign for Vec3 {
    fn add_assign(&mut self, o: Vec3) {
        *self = *self + o;
    }
}

impl Sub for Vec3 {
    type Output = Vec3;
    fn sub(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f64> for Vec3 {
    type Output = Vec3;
    fn mul(self, s: f64) -> Vec3 {
        Vec3::new(self.x * s, self.y * s, self.z * s)
    }
}

impl Neg for Vec3 {
    type Output = Vec3;
    fn neg(self) -> Vec3 {
        Vec3::new(-self.x, -self.y, -self.z)
    }
}

/// A half-line `origin + t * dir`; `dir` is a unit vector.
#[derive(Debug, Clone, Copy)]
pub struct Ray {
    pub origin: Vec3,
    pub dir: Vec3,
}

impl Ray {
    pub fn at(&self, t: f64) -> Vec3 {
        self.origin + self.dir * t
    }
}

/// 2π as the nearest f64 (a constant, so no platform rounding question).
pub const TAU: f64 = std::f64::consts::TAU;

pub fn sin(x: f64) -> f64 {
    libm::sin(x)
}

pub fn cos(x: f64) -> f64 {
    libm::cos(x)
}

pub fn tan(x: f64) -> f64 {
    libm::tan(x)
}

pub fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

pub fn exp(x: f64) -> f64 {
    libm::exp(x)
}

/// The cubic ease `3t² - 2t³` on `t` clamped to `[0, 1]`.
pub fn smoothstep(t: f64) -> f64 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A 32-bit integer hash (lowbias32 by Chris Wellons): cheap, well mixed, and
/// pure integer arithmetic, so sample positions are identical everywhere.
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Maps a hash to `[0, 1)` exactly (24 bits fit an f64 mantissa).
pub fn unit_from_hash(h: u32) -> f64 {
    f64::from(h >> 8) * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_follows_the_right_hand_rule() {
        let x = Vec3::new(1.0, 0.0, 0.0);
        let y = Vec3::new(0.0, 1.0, 0.0);
        assert_eq!(x.cross(y), Vec3::new(0.0, 0.0, 1.0));
    }

    #[test]
    fn normalizing_zero_or_nan_gives_none() {
        assert_eq!(Vec3::ZERO.try_normalized(), None);
        assert_eq!(Vec3::new(f64::NAN, 0.0, 0.0).try_normalized(), None);
        let n = Vec3::new(0.0, 0.0, 4.0).try_normalized();
        assert_eq!(n, Some(Vec3::new(0.0, 0.0, 1.0)));
    }

    #[test]
    fn reflect_flips_the_normal_component() {
        let d = Vec3::new(1.0, -1.0, 0.0);
        assert_eq!(d.reflect(Vec3::UP), Vec3::new(1.0, 1.0, 0.0));
    }

    #[test]
    fn smoothstep_is_clamped_and_symmetric() {
        assert_eq!(smoothstep(-1.0), 0.0);
        assert_eq!(smoothstep(2.0), 1.0);
        assert_eq!(smoothstep(0.5), 0.5);
    }

    #[test]
    fn unit_from_hash_stays_below_one() {
        assert_eq!(unit_from_hash(0), 0.0);
        assert!(unit_from_hash(u32::MAX) < 1.0);
        assert_ne!(hash32(1), hash32(2));
    }
}
