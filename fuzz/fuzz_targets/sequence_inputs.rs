//! Untrusted inputs of a shot's frame (a mask, an OpenEXR motion pass, a `.flo` file),
//! decoded for a 16x9 frame: each is sized from its header against the frame before it is
//! decoded, so anything else is an error, never a panic or an allocation beyond the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stylize_core::image_io::decode_mask;
use stylize_core::motion::{ExrMotionChannels, decode_exr, read_flo};

const FRAME: (usize, usize) = (16, 9);

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Ok(mask) = decode_mask(bytes, "mask", (FRAME.0 as u32, FRAME.1 as u32)) {
                assert_eq!(mask.len(), FRAME.0 * FRAME.1);
            }
        }
        1 => {
            let channels = ExrMotionChannels {
                x: "R".into(),
                y: "G".into(),
                x_sign: 1.0,
                y_sign: -1.0,
            };
            if let Ok(motion) = decode_exr(bytes, "motion", &channels, Some(FRAME)) {
                assert_eq!((motion.width, motion.height), FRAME);
            }
        }
        _ => {
            if let Ok(motion) = read_flo(bytes, "flow.flo", Some(FRAME)) {
                assert_eq!((motion.width, motion.height), FRAME);
            }
        }
    }
});
