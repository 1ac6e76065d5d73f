//! Quantities, pid counts, percentages and durations. Whatever parses must keep its text and
//! parse again to the same value; nothing may panic or loop.
#![no_main]
use a2a::api::quantity::{CpuKind, DurationKind, MemoryKind, PercentKind, PidsKind, ScalarKind};
use libfuzzer_sys::fuzz_target;

fn roundtrip<K: ScalarKind>(text: &str) {
    if let Ok(v) = K::parse(text) {
        assert_eq!(K::parse(text), Ok(v), "{text:?} parses differently twice");
        let json = serde_json::Value::String(text.to_owned());
        assert!(a2a::api::quantity::Scalar::<K>::check_json(&json).is_ok(), "{text:?}");
    }
}

fuzz_target!(|text: &str| {
    roundtrip::<MemoryKind>(text);
    roundtrip::<CpuKind>(text);
    roundtrip::<PidsKind>(text);
    roundtrip::<PercentKind>(text);
    roundtrip::<DurationKind>(text);
    if let Ok(n) = text.parse::<i64>() {
        let _ = MemoryKind::from_int(n);
        let _ = CpuKind::from_int(n);
        let _ = PidsKind::from_int(n);
    }
});
