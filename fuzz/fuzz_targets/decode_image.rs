//! Untrusted image bytes through the decoder a request field goes through, and its limits
//! (dimensions from the header before any allocation, then `image::Limits`): any input is an
//! image or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stylize_core::exr_file::Transfer;
use stylize_core::image_io::decode_field;

const MAX_PIXELS: u64 = 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = decode_field(data, "content", MAX_PIXELS, Transfer::SceneLinear) {
        assert!(u64::from(image.width()) * u64::from(image.height()) <= MAX_PIXELS);
    }
});
