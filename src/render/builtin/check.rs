//! Validation helpers for scene files: limits, key names, keyframe tracks.
//!
//! Kept apart from `scene.rs` so that the scene's shape (what is built) reads
//! separately from the rules (what is allowed). Every check returns a
//! `SceneError::Invalid` naming the key in the file, the value found and the
//! rule it broke, so a user can fix a scene without reading this code.

use std::fmt::Debug;

use super::anim::{Ease, Lerp, Track};
use super::format::Triple;
use super::math::Vec3;
use super::scene::SceneError;

/// Largest coordinate or length accepted, in scene units. Far beyond any
/// sensible scene, small enough that squares and products stay finite.
pub const MAX_COORD: f64 = 1e6;

/// A closed or open interval a number must lie in (numbers must be finite).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
}

impl Limit {
    pub const UNIT: Limit = Limit::closed(0.0, 1.0);
    pub const LENGTH: Limit = Limit {
        lo: 0.0,
        hi: MAX_COORD,
        lo_open: true,
        hi_open: false,
    };
    pub const COORD: Limit = Limit::closed(-MAX_COORD, MAX_COORD);
    pub const ORBIT_RADIUS: Limit = Limit::closed(0.0, MAX_COORD);
    pub const PERIOD: Limit = Limit::closed(-1e9, 1e9);
    pub const PHASE: Limit = Limit::closed(-MAX_COORD, MAX_COORD);
    pub const FOV: Limit = Limit {
        lo: 0.0,
        hi: 180.0,
        lo_open: true,
        hi_open: true,
    };
    pub const INTENSITY: Limit = Limit::closed(0.0, 1000.0);
    pub const SHININESS: Limit = Limit::closed(1.0, 10_000.0);

    pub const fn closed(lo: f64, hi: f64) -> Limit {
        Limit {
            lo,
            hi,
            lo_open: false,
            hi_open: false,
        }
    }

    fn contains(&self, v: f64) -> bool {
        let above = if self.lo_open {
            v > self.lo
        } else {
            v >= self.lo
        };
        let below = if self.hi_open {
            v < self.hi
        } else {
            v <= self.hi
        };
        v.is_finite() && above && below
    }

    fn describe(&self) -> String {
        let open = if self.lo_open { '(' } else { '[' };
        let close = if self.hi_open { ')' } else { ']' };
        format!(
            "must be a finite number in {open}{}, {}{close}",
            self.lo, self.hi
        )
    }
}

/// Who a key belongs to: `camera`, `materials.gold`, `sphere[2]`, `sphere["moon"]`.
pub struct Owner {
    label: String,
}

impl Owner {
    /// The `index`-th (from 0) `[[kind]]` table; its `name` if it has one.
    pub fn new(kind: &str, index: usize, name: Option<&str>) -> Owner {
        let label = match name {
            Some(n) => format!("{kind}[\"{}\"]", shorten(n)),
            None => format!("{kind}[{}]", index + 1),
        };
        Owner { label }
    }

    /// A plain table such as `camera`.
    pub fn table(label: &str) -> Owner {
        Owner {
            label: label.to_string(),
        }
    }

    pub fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.label)
    }

    fn key_of(&self, index: usize, field: &str) -> String {
        format!("{}.keys[{}].{field}", self.label, index + 1)
    }
}

/// Cuts untrusted text (names) to a length that keeps messages readable.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

pub fn invalid(key: impl Into<String>, value: impl Debug, reason: impl Into<String>) -> SceneError {
    let mut value = format!("{value:?}");
    if value.len() > 80 {
        value = shorten(&value);
    }
    SceneError::Invalid {
        key: key.into(),
        value,
        reason: reason.into(),
    }
}

pub fn missing(owner: &Owner, field: &str) -> SceneError {
    let reason =
        format!("`{field}` is required: set it on the table itself or in at least one of its keys");
    invalid(owner.key(field), "(missing)", reason)
}

pub fn number(key: &str, v: f64, limit: Limit) -> Result<f64, SceneError> {
    if limit.contains(v) {
        Ok(v)
    } else {
        Err(invalid(key, v, limit.describe()))
    }
}

pub fn count(key: &str, v: u32, limit: Limit) -> Result<u32, SceneError> {
    if limit.contains(f64::from(v)) {
        Ok(v)
    } else {
        Err(invalid(
            key,
            v,
            limit.describe().replace("finite number", "whole number"),
        ))
    }
}

fn triple(key: &str, v: Triple, limit: Limit, what: &str) -> Result<Vec3, SceneError> {
    if v.iter().all(|c| limit.contains(*c)) {
        Ok(Vec3::from_array(v))
    } else {
        let reason = format!("each {what} component {}", limit.describe());
        Err(invalid(key, v, reason))
    }
}

/// A position: three finite numbers within `MAX_COORD`.
pub fn coord(key: &str, v: Triple) -> Result<Vec3, SceneError> {
    triple(key, v, Limit::COORD, "coordinate")
}

/// A linear RGB colour, each channel in `[0, 1]`.
pub fn colour(key: &str, v: Triple) -> Result<Vec3, SceneError> {
    triple(key, v, Limit::UNIT, "colour")
}

/// A box size: three positive lengths.
fn size(key: &str, v: Triple) -> Result<Vec3, SceneError> {
    triple(key, v, Limit::LENGTH, "size")
}

/// A direction: any non-zero vector, returned normalised.
pub fn direction(key: &str, v: Triple) -> Result<Vec3, SceneError> {
    coord(key, v)?.try_normalized().ok_or_else(|| {
        invalid(
            key,
            v,
            "must not be the zero vector: give a direction such as [0, 1, 0]",
        )
    })
}

/// Keyframes must be listed in strictly increasing frame order.
pub fn key_frames(owner: &Owner, frames: impl Iterator<Item = u32>) -> Result<(), SceneError> {
    let mut previous: Option<u32> = None;
    for (i, frame) in frames.enumerate() {
        if let Some(p) = previous.filter(|p| frame <= *p) {
            let reason = format!(
                "keys must be listed in increasing frame order without repeats; the key before is at frame {p}"
            );
            return Err(invalid(owner.key_of(i, "frame"), frame, reason));
        }
        previous = Some(frame);
    }
    Ok(())
}

/// Builds one animated channel from the table's own value and the keys that
/// set it. `None` when neither does (the caller applies the default or
/// reports the key missing).
fn track<R: Copy, T: Lerp>(
    owner: &Owner,
    field: &str,
    base: Option<R>,
    frames: &[u32],
    ease: Ease,
    pick: impl Fn(usize) -> Option<R>,
    convert: impl Fn(&str, R) -> Result<T, SceneError>,
) -> Result<Option<Track<T>>, SceneError> {
    let base = match base {
        Some(b) => Some(convert(&owner.key(field), b)?),
        None => None,
    };
    let mut keys = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        if let Some(raw) = pick(i) {
            keys.push((*frame, convert(&owner.key_of(i, field), raw)?));
        }
    }
    let base = match (base, keys.first()) {
        (Some(b), _) => b,
        (None, Some(first)) => first.1,
        (None, None) => return Ok(None),
    };
    Ok(Some(Track::keyed(base, keys, ease)))
}

/// A keyable position.
pub fn vec_track(
    owner: &Owner,
    field: &str,
    base: Option<Triple>,
    frames: &[u32],
    ease: Ease,
    pick: impl Fn(usize) -> Option<Triple>,
) -> Result<Option<Track<Vec3>>, SceneError> {
    track(owner, field, base, frames, ease, pick, coord)
}

/// A keyable box size.
pub fn size_track(
    owner: &Owner,
    base: Option<Triple>,
    frames: &[u32],
    ease: Ease,
    pick: impl Fn(usize) -> Option<Triple>,
) -> Result<Option<Track<Vec3>>, SceneError> {
    track(owner, "size", base, frames, ease, pick, size)
}

/// A keyable number within `limit`.
pub fn num_track(
    owner: &Owner,
    field: &str,
    base: Option<f64>,
    frames: &[u32],
    ease: Ease,
    limit: Limit,
    pick: impl Fn(usize) -> Option<f64>,
) -> Result<Option<Track<f64>>, SceneError> {
    track(owner, field, base, frames, ease, pick, |key, v| {
        number(key, v, limit)
    })
}

/// Resolves `material = "name"`; index 0 (the default material) when unset.
pub fn material_index(
    owner: &Owner,
    name: Option<&str>,
    names: &[&str],
) -> Result<usize, SceneError> {
    let Some(name) = name else { return Ok(0) };
    match names.iter().skip(1).position(|n| *n == name) {
        Some(i) => Ok(i + 1),
        None => {
            let known: Vec<String> = names.iter().skip(1).take(10).map(|n| shorten(n)).collect();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            let reason = format!(
                "no [materials.{}] table in this scene (defined: {known})",
                shorten(name)
            );
            Err(invalid(owner.key("material"), shorten(name), reason))
        }
    }
}
