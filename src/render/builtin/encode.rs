//! PNG encoding with settings fixed for byte-stable output.
//!
//! The farm compares frames by hash, so the encoder's choices are pinned:
//! 8-bit RGB, an sRGB chunk, the Paeth filter on every row (no adaptive
//! choice) and png's built-in `fdeflate` compressor. `fdeflate` is a direct
//! dependency of png; the zlib levels instead go through flate2, whose
//! backend (miniz_oxide, zlib-rs, zlib) is chosen by cargo feature
//! unification across the whole dependency graph, so another crate in the
//! binary could silently change the bytes. Upgrading png may still change
//! them: the golden test in `tests.rs` will say so.

use std::io::Cursor;

use png::{BitDepth, ColorType, DeflateCompression, Encoder, Filter, SrgbRenderingIntent};

use super::RenderError;

/// Encodes `rgb` (3 bytes per pixel, rows top to bottom) as a PNG file.
pub fn png_rgb8(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, RenderError> {
    let mut out = Cursor::new(Vec::with_capacity(rgb.len() / 2 + 1024));
    let mut encoder = Encoder::new(&mut out, width, height);
    encoder.set_color(ColorType::Rgb);
    encoder.set_depth(BitDepth::Eight);
    encoder.set_source_srgb(SrgbRenderingIntent::Perceptual);
    encoder.set_deflate_compression(DeflateCompression::FdeflateUltraFast);
    encoder.set_filter(Filter::Paeth);
    let fail = |e: png::EncodingError| RenderError::Encode(e.to_string());
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_png_decoder() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let file = png_rgb8(4, 3, &rgb).unwrap();
        let mut reader = png::Decoder::new(Cursor::new(&file)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width, info.height, info.color_type),
            (4, 3, ColorType::Rgb)
        );
        assert_eq!(&buf[..info.buffer_size()], &rgb[..]);
    }

    #[test]
    fn wrong_buffer_size_is_an_error_not_a_panic() {
        assert!(matches!(
            png_rgb8(4, 3, &[0; 5]),
            Err(RenderError::Encode(_))
        ));
    }
}
