//! Untrusted image bytes through the server's decoder and its limits (dimensions from the
//! header before any allocation, then `image::Limits`): any input is an image or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stylize::server::convert::{Limits, decode_field};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_pixels: 1024 * 1024,
        ..Limits::default()
    };
    if let Ok(image) = decode_field(data, "content", &limits) {
        assert!(u64::from(image.width()) * u64::from(image.height()) <= limits.max_pixels);
    }
});
