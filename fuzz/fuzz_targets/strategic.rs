//! Strategic merge patch of the built-in kinds, driven by their published patch metadata: the
//! first byte picks the kind, then the document, a NUL byte, and the patch.
#![no_main]
use a2a::apiserver::resources::RESOURCES;
use a2a::apiserver::smp;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((pick, rest)) = data.split_first() else { return };
    let kinds: Vec<_> = RESOURCES.iter().filter(|r| r.a2a.is_none()).collect();
    let res = kinds[usize::from(*pick) % kinds.len()];
    let mut parts = rest.splitn(2, |b| *b == 0);
    let (doc, patch) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let Ok(mut doc) = serde_json::from_slice::<Value>(doc) else { return };
    let Ok(patch) = serde_json::from_slice::<Value>(patch) else { return };
    let _ = smp::apply(&mut doc, patch, smp::kind_schema(res));
});
