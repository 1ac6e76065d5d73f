//! Manifest decoding: bytes → text → YAML documents → validated objects, and the API
//! server's reading of a YAML request body. Nothing may panic or take unbounded time.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = a2a::api::manifest::decode("fuzz.yaml", data.to_vec()) {
        let _ = a2a::api::manifest::load_str("fuzz.yaml", &text);
    }
    let _ = a2a::apiserver::handlers::parse_body(&bytes::Bytes::copy_from_slice(data), true);
});
