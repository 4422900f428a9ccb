//! Inputs that cost a careless decoder far more than their size: PNGs whose headers declare
//! huge images, and OpenEXR files whose parts are large planes of zeros that compress to
//! almost nothing.

use exr::prelude::{
    Encoding, Image, ImageAttributes, IntegerBounds, Layer, LayerAttributes, SpecificChannels,
    Vec2, WritableImage, f16,
};

/// CRC-32 (PNG's chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 60-byte PNG whose header declares `width x height` pixels of `colour_type` (0: grey,
/// 2: RGB): a decompression bomb
/// if a decoder allocates from the header.
pub fn png_declaring(width: u32, height: u32, colour_type: u8) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    };
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

fn zero(_: Vec2<usize>) -> (f16, f16, f16) {
    (f16::ZERO, f16::ZERO, f16::ZERO)
}

/// An OpenEXR file with one part per `(name, width, height)`, each with `R`, `G` and `B`
/// channels of zeros (run-length encoded: a few KB whatever the size).
pub fn exr_parts(parts: &[(&str, usize, usize)]) -> Vec<u8> {
    let zero: fn(Vec2<usize>) -> (f16, f16, f16) = zero;
    let layers: Vec<_> = parts
        .iter()
        .map(|&(name, width, height)| {
            Layer::new(
                (width, height),
                LayerAttributes::named(name),
                Encoding::FAST_LOSSLESS,
                SpecificChannels::rgb(zero),
            )
        })
        .collect();
    let (width, height) = parts
        .iter()
        .fold((1, 1), |(w, h), &(_, pw, ph)| (w.max(pw), h.max(ph)));
    let attributes = ImageAttributes::new(IntegerBounds::from_dimensions((width, height)));
    let mut out = std::io::Cursor::new(Vec::new());
    Image::from_layers(attributes, layers)
        .write()
        .to_buffered(&mut out)
        .unwrap();
    out.into_inner()
}
