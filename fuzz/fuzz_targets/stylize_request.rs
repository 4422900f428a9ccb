//! Arbitrary bytes as a `StylizeRequest`: prost decoding, then the server's whole
//! validation and conversion into a job (images decoded under limits, options checked).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use stylize::registry::StyleRegistry;
use stylize::server::convert::{Limits, job_spec};
use stylize::server::proto::StylizeRequest;

fuzz_target!(|data: &[u8]| {
    static REGISTRY: OnceLock<StyleRegistry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| StyleRegistry::new(16 << 20));
    let limits = Limits {
        max_pixels: 512 * 512,
        ..Limits::default()
    };
    if let Ok(request) = StylizeRequest::decode(data) {
        let _ = job_spec(request, "fuzz".to_string(), None, &limits, registry);
    }
});
