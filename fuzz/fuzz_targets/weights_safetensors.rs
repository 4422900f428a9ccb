//! Weights files in safetensors: the project's own layout and torchvision's names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stylize_core::model::{store, torchvision};

fuzz_target!(|data: &[u8]| {
    let _ = store::from_safetensors(data);
    let _ = torchvision::from_safetensors(data);
});
