//! The API server's patches: a JSON patch (RFC 6902) read by its fast path and applied, and a
//! merge patch (RFC 7386) applied by moving values, which must equal json_patch's merge.
#![no_main]
use a2a::apiserver::handlers::{merge_owned, parse_json_patch};
use a2a::apiserver::managed::{Before, Touched};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

// The input is the document, a NUL byte, and the patch (JSON holds no raw NUL).
fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (doc, patch) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let Ok(doc) = serde_json::from_slice::<Value>(doc) else { return };
    if let Ok(p) = parse_json_patch(patch) {
        // The fast reading accepts exactly what json_patch's own reading accepts, as the same.
        let slow: json_patch::Patch = serde_json::from_slice(patch).expect("the fast path accepted it");
        assert_eq!(p, slow);
        let _ = Touched::of_json_patch(&p);
        let _ = Before::of_json_patch(&doc, &p);
        let mut d = doc.clone();
        let _ = json_patch::patch(&mut d, &p);
    }
    if let Ok(p) = serde_json::from_slice::<Value>(patch) {
        let _ = Touched::of_merge_patch(&p);
        let mut by_ref = doc.clone();
        json_patch::merge(&mut by_ref, &p);
        let mut moved = doc.clone();
        let _ = merge_owned(&mut moved, p);
        assert_eq!(moved, by_ref, "merge_owned differs from RFC 7386");
    }
});
