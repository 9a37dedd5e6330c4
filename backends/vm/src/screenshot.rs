//! Pixels as the X server hands them over, and their PNG encoding.
//!
//! A [`Frame`] is the screen in the server's own pixel layout (ZPixmap: 16 or 32 bits a pixel,
//! either byte order, any TrueColor masks); [`Frame::to_rgb`] turns it into packed RGB, with a
//! fast path for the usual little-endian `BGRX` of depth 24. [`encode_png`] picks the encoder
//! settings (see [`SCREENSHOT_COMPRESSION`]). Getting the pixels from the server is left to `desktop.rs`.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use crate::error::{Error, Result};

/// How hard PNG encoding compresses, and with which row filter.
///
/// Measured on 1920×1080 screens (`benches/vm.rs`): trying every filter on every row
/// ("adaptive") costs more than it saves. On text, Paeth is as small as adaptive and a quarter
/// faster; on a photo, Up with fdeflate takes half the time of adaptive for 1% more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The `png` crate's fastest deflate (fdeflate) with the Up filter: quickest by far on
    /// photo-like content, about twice the size of [`Compression::Zlib`]`(2)` on windows and text.
    Fastest,
    /// A zlib level, 1 (fast) to 9 (small), with the Paeth filter. With zlib-rs, level 1 is a
    /// "quick" strategy that compresses photos badly; level 2 is the fast one worth using.
    Zlib(u8),
    /// [`Compression::Zlib`]`(2)` for screens of windows and text, [`Compression::Fastest`] for
    /// photo-like ones, chosen by compressing a sample of rows (a sixteenth of the screen) the
    /// fast way first: see [`choose`].
    Auto,
}

/// The setting of screenshots: see [`Compression::Auto`]. A screenshot goes into every LLM
/// request, so its size matters as much as its speed: zlib level 2 halves the PNG of a text
/// screen for a couple of milliseconds, but takes over 100 ms on a photo, where fdeflate takes
/// about 20 and is only a fifth larger.
pub const SCREENSHOT_COMPRESSION: Compression = Compression::Auto;

/// Above this ratio of compressed to raw size, a sample is photo-like.
const PHOTO_RATIO: f64 = 0.25;

/// What [`Compression::Auto`] picks for this image: every sixteenth band of 4 rows is encoded with
/// [`Compression::Fastest`]; if that leaves more than a quarter of the bytes, zlib would be slow
/// for little gain, so the image is encoded the fast way.
pub fn choose(rgb: &[u8], width: u32, height: u32) -> Compression {
    let row = width as usize * 3;
    let mut sample = Vec::with_capacity(rgb.len() / 16 + row * 4);
    for start in (0..height as usize).step_by(64) {
        let end = (start + 4).min(height as usize);
        sample.extend_from_slice(&rgb[start * row..end * row]);
    }
    let rows = (sample.len() / row.max(1)) as u32;
    match encode_png_with(&sample, width, rows, Compression::Fastest) {
        Ok(png) if (png.len() as f64) < sample.len() as f64 * PHOTO_RATIO => Compression::Zlib(2),
        _ => Compression::Fastest,
    }
}

/// How the server lays out a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PixelFormat {
    /// 16 or 32.
    pub(crate) bits_per_pixel: u8,
    /// Bytes of one row of the screen, padding included.
    pub(crate) stride: usize,
    /// Rows are padded to a multiple of this many bits.
    pub(crate) scanline_pad: usize,
    /// The server's image byte order is most-significant first.
    pub(crate) big_endian: bool,
    pub(crate) red_mask: u32,
    pub(crate) green_mask: u32,
    pub(crate) blue_mask: u32,
}

impl PixelFormat {
    fn is_bgrx(&self) -> bool {
        self.bits_per_pixel == 32
            && !self.big_endian
            && (self.red_mask, self.green_mask, self.blue_mask) == (0xff_0000, 0xff00, 0xff)
    }

    /// Bytes of one row `width` pixels wide, padding included.
    pub(crate) fn stride_for(&self, width: usize) -> usize {
        let pad = self.scanline_pad.max(8);
        (width * usize::from(self.bits_per_pixel)).div_ceil(pad) * pad / 8
    }

    /// Packed RGB to this layout (the inverse of [`Frame::to_rgb`]), for PutImage.
    pub(crate) fn encode_rgb(&self, rgb: &[u8], width: usize) -> Vec<u8> {
        let bytes = usize::from(self.bits_per_pixel / 8);
        let stride = self.stride_for(width);
        let rows = rgb.len() / (width * 3).max(1);
        let mut out = vec![0u8; stride * rows];
        let place = |c: u8, mask: u32| -> u32 {
            if mask == 0 {
                return 0;
            }
            let bits = (mask >> mask.trailing_zeros()).count_ones();
            (u32::from(c) >> 8u32.saturating_sub(bits)) << mask.trailing_zeros() & mask
        };
        for (src, dst) in rgb.chunks_exact(width * 3).zip(out.chunks_exact_mut(stride)) {
            for (p, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(bytes)) {
                let v = place(p[0], self.red_mask) | place(p[1], self.green_mask) | place(p[2], self.blue_mask);
                match (bytes, self.big_endian) {
                    (2, false) => d.copy_from_slice(&(v as u16).to_le_bytes()),
                    (2, true) => d.copy_from_slice(&(v as u16).to_be_bytes()),
                    (_, false) => d.copy_from_slice(&v.to_le_bytes()),
                    (_, true) => d.copy_from_slice(&v.to_be_bytes()),
                }
            }
        }
        out
    }

    fn value(&self, px: &[u8]) -> u32 {
        match (self.bits_per_pixel, self.big_endian) {
            (16, false) => u32::from(u16::from_le_bytes([px[0], px[1]])),
            (16, true) => u32::from(u16::from_be_bytes([px[0], px[1]])),
            (_, false) => u32::from_le_bytes([px[0], px[1], px[2], px[3]]),
            (_, true) => u32::from_be_bytes([px[0], px[1], px[2], px[3]]),
        }
    }
}

/// One channel of a pixel value, scaled to 8 bits.
fn channel(value: u32, mask: u32) -> u8 {
    if mask == 0 {
        return 0;
    }
    let v = (value & mask) >> mask.trailing_zeros();
    let bits = (mask >> mask.trailing_zeros()).count_ones();
    if bits >= 8 {
        (v >> (bits - 8)) as u8
    } else {
        // Replicate the high bits into the low ones, so that full scale stays full scale.
        let v8 = v << (8 - bits);
        (v8 | (v8 >> bits)) as u8
    }
}

/// The screen as the server sent it.
#[derive(Debug)]
pub struct Frame<'a> {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) format: PixelFormat,
    pub(crate) data: &'a [u8],
}

impl Frame<'_> {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The colour of one pixel, as `[r, g, b]`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let bytes = usize::from(self.format.bits_per_pixel / 8);
        let at = y as usize * self.format.stride + x as usize * bytes;
        let v = self.format.value(&self.data[at..at + bytes]);
        let f = &self.format;
        [channel(v, f.red_mask), channel(v, f.green_mask), channel(v, f.blue_mask)]
    }

    /// Writes the frame as packed RGB (3 bytes a pixel, no row padding) into `out`, reusing its
    /// allocation.
    pub fn to_rgb(&self, out: &mut Vec<u8>) {
        let (w, h) = (self.width as usize, self.height as usize);
        out.resize(w * h * 3, 0);
        let bytes = usize::from(self.format.bits_per_pixel / 8);
        for (row, dst) in out.chunks_exact_mut(w * 3).enumerate() {
            let src = &self.data[row * self.format.stride..][..w * bytes];
            if self.format.is_bgrx() {
                // Four pixels at a time: fixed-size arrays let the compiler drop bounds checks.
                let mut quads = dst.chunks_exact_mut(12).zip(src.chunks_exact(16));
                for (d, s) in &mut quads {
                    let (d, s): (&mut [u8; 12], &[u8; 16]) = (d.try_into().unwrap(), s.try_into().unwrap());
                    *d = [s[2], s[1], s[0], s[6], s[5], s[4], s[10], s[9], s[8], s[14], s[13], s[12]];
                }
                let done = w / 4 * 4;
                for (d, s) in dst[done * 3..].chunks_exact_mut(3).zip(src[done * 4..].chunks_exact(4)) {
                    d.copy_from_slice(&[s[2], s[1], s[0]]);
                }
            } else {
                let f = &self.format;
                for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(bytes)) {
                    let v = f.value(s);
                    d.copy_from_slice(&[channel(v, f.red_mask), channel(v, f.green_mask), channel(v, f.blue_mask)]);
                }
            }
        }
    }
}

/// A screenshot: PNG bytes and the size they show.
#[derive(Debug, Clone)]
pub struct Screenshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The PNG file.
    pub png: Vec<u8>,
}

/// Encodes packed RGB as PNG at [`SCREENSHOT_COMPRESSION`].
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    encode_png_with(rgb, width, height, SCREENSHOT_COMPRESSION)
}

/// Encodes packed RGB as PNG at the given compression.
pub fn encode_png_with(rgb: &[u8], width: u32, height: u32, compression: Compression) -> Result<Vec<u8>> {
    let mut png = Vec::with_capacity(rgb.len() / 16);
    let (level, filter) = match compression {
        Compression::Fastest => (CompressionType::Fast, FilterType::Up),
        Compression::Zlib(n) => (CompressionType::Level(n.clamp(1, 9)), FilterType::Paeth),
        Compression::Auto => return encode_png_with(rgb, width, height, choose(rgb, width, height)),
    };
    PngEncoder::new_with_quality(&mut png, level, filter)
        .write_image(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| Error::Encode(e.to_string()))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgrx_rows_of_any_width_convert() {
        let format = PixelFormat {
            bits_per_pixel: 32,
            stride: 7 * 4,
            scanline_pad: 32,
            big_endian: false,
            red_mask: 0xff_0000,
            green_mask: 0xff00,
            blue_mask: 0xff,
        };
        let data: Vec<u8> = (0..7 * 4 * 2).map(|i| i as u8).collect();
        let frame = Frame { width: 7, height: 2, format, data: &data };
        let mut rgb = Vec::new();
        frame.to_rgb(&mut rgb);
        let expected: Vec<u8> = data.chunks(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
        assert_eq!(rgb, expected);
    }

    #[test]
    fn channels_scale_to_full_range() {
        assert_eq!(channel(0xf800, 0xf800), 0xff);
        assert_eq!(channel(0x07e0, 0x07e0), 0xff);
        assert_eq!(channel(0x0000, 0x001f), 0);
        assert_eq!(channel(0x12_3456, 0xff_0000), 0x12);
    }

    #[test]
    fn bgrx_and_rgb565_frames_convert_to_rgb() {
        let bgrx = PixelFormat {
            bits_per_pixel: 32,
            stride: 8,
            scanline_pad: 32,
            big_endian: false,
            red_mask: 0xff_0000,
            green_mask: 0xff00,
            blue_mask: 0xff,
        };
        let data = [3, 2, 1, 0, 30, 20, 10, 0, 0xff, 0, 0, 0, 0, 0xff, 0, 0];
        let frame = Frame { width: 2, height: 2, format: bgrx, data: &data };
        let mut rgb = Vec::new();
        frame.to_rgb(&mut rgb);
        assert_eq!(rgb, [1, 2, 3, 10, 20, 30, 0, 0, 0xff, 0, 0xff, 0]);
        assert_eq!(frame.pixel(1, 0), [10, 20, 30]);

        // 16 bits, rows padded to 4 bytes: one red pixel, then a pad.
        let rgb565 = PixelFormat {
            bits_per_pixel: 16,
            stride: 4,
            scanline_pad: 32,
            big_endian: false,
            red_mask: 0xf800,
            green_mask: 0x7e0,
            blue_mask: 0x1f,
        };
        let data = [0x00, 0xf8, 0xaa, 0xaa];
        let frame = Frame { width: 1, height: 1, format: rgb565, data: &data };
        frame.to_rgb(&mut rgb);
        assert_eq!(rgb, [0xff, 0, 0]);
        assert_eq!(rgb565.encode_rgb(&[0xff, 0, 0], 1), [0x00, 0xf8, 0, 0]);
        assert_eq!(bgrx.encode_rgb(&[1, 2, 3, 10, 20, 30], 2), [3, 2, 1, 0, 30, 20, 10, 0]);
    }

    #[test]
    fn auto_compression_tells_photos_from_flat_screens() {
        let (w, h) = (256u32, 128u32);
        let flat: Vec<u8> =
            (0..w * h).flat_map(|i| if (i / 7) % 9 == 0 { [0u8, 0, 0] } else { [250, 250, 250] }).collect();
        assert_eq!(choose(&flat, w, h), Compression::Zlib(2));
        let mut seed = 12345u32;
        let noisy: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        assert_eq!(choose(&noisy, w, h), Compression::Fastest);
    }

    #[test]
    fn png_round_trips() {
        let rgb: Vec<u8> = (0..32 * 16 * 3).map(|i| (i % 251) as u8).collect();
        let png = encode_png(&rgb, 32, 16).unwrap();
        let back = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap().to_rgb8();
        assert_eq!((back.width(), back.height()), (32, 16));
        assert_eq!(back.into_raw(), rgb);
    }
}
