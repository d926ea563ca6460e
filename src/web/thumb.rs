//! Small PNG thumbnails of finished frames for the page's strip.
//!
//! Only PNG outputs get one (the page shows a placeholder for EXR and the
//! rest). The frame is decoded, box-filtered down to at most [`MAX_WIDTH`]
//! pixels wide, and encoded again; thumbnails are kept in a small cache,
//! since blobs never change.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::hash::Hash;

/// Widest thumbnail, in pixels.
pub const MAX_WIDTH: u32 = 240;
/// Thumbnails kept in memory.
const CACHE: usize = 1024;
/// Largest frame decoded for a thumbnail (a 16K RGBA frame).
const MAX_PIXELS: u64 = 16384 * 16384;

fn cache() -> &'static Mutex<HashMap<Hash, Vec<u8>>> {
    static CACHE_MAP: OnceLock<Mutex<HashMap<Hash, Vec<u8>>>> = OnceLock::new();
    CACHE_MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The thumbnail of the PNG `bytes`, named by their blob.
pub fn thumbnail(blob: Hash, bytes: &[u8]) -> Result<Vec<u8>, String> {
    if let Some(t) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&blob) {
        return Ok(t.clone());
    }
    let thumb = make(bytes)?;
    let mut c = cache().lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= CACHE {
        c.clear();
    }
    c.insert(blob, thumb.clone());
    Ok(thumb)
}

fn make(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!("frame of {w}x{h} is too large to thumbnail"));
    }
    let size = reader.output_buffer_size().ok_or("frame too large")?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let channels = info.color_type.samples();
    let rgb = to_rgb(&buf[..info.buffer_size()], channels);
    let scale = w.div_ceil(MAX_WIDTH).max(1);
    let (tw, th) = (w.div_ceil(scale), h.div_ceil(scale));
    let small = shrink(&rgb, w, h, scale, tw, th);
    encode(&small, tw, th)
}

/// Any 8-bit layout to RGB (grey is spread, alpha dropped).
fn to_rgb(px: &[u8], channels: usize) -> Vec<u8> {
    px.chunks_exact(channels.max(1))
        .flat_map(|p| match p.len() {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect()
}

/// Box filter: each thumbnail pixel is the mean of a `scale`-square block.
fn shrink(rgb: &[u8], w: u32, h: u32, scale: u32, tw: u32, th: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((tw * th * 3) as usize);
    for ty in 0..th {
        for tx in 0..tw {
            let mut sum = [0u32; 3];
            let mut n = 0;
            for y in ty * scale..((ty + 1) * scale).min(h) {
                for x in tx * scale..((tx + 1) * scale).min(w) {
                    let i = ((y * w + x) * 3) as usize;
                    for c in 0..3 {
                        sum[c] += u32::from(rgb[i + c]);
                    }
                    n += 1;
                }
            }
            out.extend(sum.iter().map(|s| (s / n.max(1)) as u8));
        }
    }
    out
}

fn encode(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_shrinks_to_at_most_the_thumbnail_width() {
        let (w, h) = (640u32, 360u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % 256) as u8, 100, 200])
            .collect();
        let png = encode(&rgb, w, h).unwrap();
        let t = thumbnail(Hash::of(&png), &png).unwrap();
        let mut d = png::Decoder::new(std::io::Cursor::new(&t))
            .read_info()
            .unwrap();
        let info = d.info().clone();
        assert!(info.width <= MAX_WIDTH && info.width >= MAX_WIDTH / 2);
        assert_eq!(info.height, h.div_ceil(w.div_ceil(MAX_WIDTH)));
        let mut buf = vec![0; d.output_buffer_size().unwrap()];
        d.next_frame(&mut buf).unwrap();
        assert_eq!(buf[1], 100, "colour survives the box filter");
        assert!(thumbnail(Hash::of(b"junk"), b"junk").is_err());
    }
}
