//! Animation: keyframe tracks and orbits, evaluated at a frame number.
//!
//! Time is the frame number itself (no frames-per-second): a scene says "at
//! frame 24 the camera is here", and an orbit's period is counted in frames.
//! Every animated property is a [`Track`]: a base value used when nothing is
//! keyed, plus keys sorted by frame. Before the first key a track holds the
//! first key's value, after the last key the last one's, so rendering a frame
//! outside the scene's own range is well defined. Positions may also carry an
//! [`Orbit`], added on top of the track, which makes seamless loops easy.
//!
//! Evaluation only uses basic arithmetic and `libm`, so every node computes
//! the same positions bit for bit.

use super::math::{self, Vec3};

/// How a track moves between two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ease {
    /// Constant speed from key to key.
    #[default]
    Linear,
    /// Slow out of each key and into the next (`3t² - 2t³`).
    Smooth,
    /// Hold each key's value until the next key.
    Step,
}

impl Ease {
    fn apply(self, t: f64) -> f64 {
        match self {
            Ease::Linear => t.clamp(0.0, 1.0),
            Ease::Smooth => math::smoothstep(t),
            Ease::Step => 0.0,
        }
    }
}

/// A value that can be blended between two keys.
pub trait Lerp: Copy {
    fn lerp(self, other: Self, t: f64) -> Self;
}

impl Lerp for f64 {
    fn lerp(self, other: f64, t: f64) -> f64 {
        self + (other - self) * t
    }
}

impl Lerp for Vec3 {
    fn lerp(self, other: Vec3, t: f64) -> Vec3 {
        Vec3::lerp(self, other, t)
    }
}

/// One animated property: its keys, strictly increasing in frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Track<T> {
    base: T,
    keys: Vec<(u32, T)>,
    ease: Ease,
}

impl<T: Lerp> Track<T> {
    /// A property that never moves.
    pub fn fixed(value: T) -> Track<T> {
        Track {
            base: value,
            keys: Vec::new(),
            ease: Ease::Linear,
        }
    }

    /// A keyed property. The caller (scene validation) guarantees that the
    /// frames are strictly increasing; `base` is used only when `keys` is empty.
    pub fn keyed(base: T, keys: Vec<(u32, T)>, ease: Ease) -> Track<T> {
        Track { base, keys, ease }
    }

    /// The value at frame `t`.
    pub fn at(&self, t: f64) -> T {
        let (first, last) = match (self.keys.first(), self.keys.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return self.base,
        };
        if t <= f64::from(first.0) {
            return first.1;
        }
        if t >= f64::from(last.0) {
            return last.1;
        }
        // The first key strictly after `t`; it exists and is not key 0.
        let next = self.keys.partition_point(|k| f64::from(k.0) <= t);
        match (self.keys.get(next.wrapping_sub(1)), self.keys.get(next)) {
            (Some(a), Some(b)) => {
                let span = f64::from(b.0) - f64::from(a.0);
                let u = (t - f64::from(a.0)) / span;
                a.1.lerp(b.1, self.ease.apply(u))
            }
            _ => last.1,
        }
    }
}

/// Circular motion in the horizontal (x, z) plane around a track's position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Orbit {
    /// Distance from the centre, scene units.
    pub radius: f64,
    /// Frames per full turn; a negative period turns the other way.
    pub period: f64,
    /// Starting angle as a fraction of a turn (0.25 = a quarter turn ahead).
    pub phase: f64,
}

impl Orbit {
    /// The offset from the orbit's centre at frame `t`. At phase 0 and frame 0
    /// the offset points along +x; it then turns towards +z.
    pub fn offset(&self, t: f64) -> Vec3 {
        let turns = t / self.period + self.phase;
        // Reduce to [0, 1) first so huge frame numbers keep full precision.
        let angle = (turns - turns.floor()) * math::TAU;
        Vec3::new(
            self.radius * math::cos(angle),
            0.0,
            self.radius * math::sin(angle),
        )
    }
}

/// A position: a track plus an optional orbit around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Motion {
    pub track: Track<Vec3>,
    pub orbit: Option<Orbit>,
}

impl Motion {
    pub fn at(&self, t: f64) -> Vec3 {
        let p = self.track.at(t);
        match &self.orbit {
            Some(o) => p + o.offset(t),
            None => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(ease: Ease) -> Track<f64> {
        Track::keyed(0.0, vec![(10, 1.0), (20, 3.0), (30, 2.0)], ease)
    }

    #[test]
    fn holds_the_end_keys_outside_the_keyed_range() {
        let t = track(Ease::Linear);
        assert_eq!(t.at(0.0), 1.0);
        assert_eq!(t.at(10.0), 1.0);
        assert_eq!(t.at(30.0), 2.0);
        assert_eq!(t.at(1e9), 2.0);
    }

    #[test]
    fn linear_interpolates_between_neighbouring_keys() {
        let t = track(Ease::Linear);
        assert_eq!(t.at(15.0), 2.0);
        assert_eq!(t.at(20.0), 3.0);
        assert_eq!(t.at(25.0), 2.5);
    }

    #[test]
    fn smooth_eases_and_step_holds() {
        let s = track(Ease::Smooth);
        assert_eq!(s.at(15.0), 2.0);
        assert!(
            s.at(12.0) < 1.0 + 2.0 * 0.2,
            "smooth starts slower than linear"
        );
        let h = track(Ease::Step);
        assert_eq!(h.at(19.0), 1.0);
        assert_eq!(h.at(20.0), 3.0);
    }

    #[test]
    fn unkeyed_track_returns_its_base() {
        assert_eq!(Track::fixed(4.0).at(7.0), 4.0);
        assert_eq!(Track::keyed(5.0, Vec::new(), Ease::Smooth).at(7.0), 5.0);
    }

    #[test]
    fn orbit_loops_over_its_period() {
        let o = Orbit {
            radius: 2.0,
            period: 48.0,
            phase: 0.0,
        };
        let a = o.offset(1.0);
        let b = o.offset(49.0);
        assert!((a - b).length() < 1e-12);
        assert!((o.offset(0.0) - Vec3::new(2.0, 0.0, 0.0)).length() < 1e-12);
        assert!((o.offset(12.0) - Vec3::new(0.0, 0.0, 2.0)).length() < 1e-12);
        let back = Orbit { period: -48.0, ..o };
        assert!((back.offset(12.0) - Vec3::new(0.0, 0.0, -2.0)).length() < 1e-12);
    }

    #[test]
    fn motion_adds_orbit_to_track() {
        let m = Motion {
            track: Track::fixed(Vec3::new(0.0, 1.0, 0.0)),
            orbit: Some(Orbit {
                radius: 1.0,
                period: 4.0,
                phase: 0.25,
            }),
        };
        assert!((m.at(0.0) - Vec3::new(0.0, 1.0, 1.0)).length() < 1e-12);
    }
}
