//! Protobuf request bodies of the built-in kinds: the first byte picks the kind, the rest is
//! the body. What decodes encodes, and decodes again to the same JSON.
#![no_main]
use a2a::apiserver::protobuf;
use a2a::apiserver::resources::RESOURCES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = data.split_first() else { return };
    let kinds: Vec<_> = RESOURCES.iter().filter(|r| protobuf::serves(r)).collect();
    let res = kinds[usize::from(*pick) % kinds.len()];
    let Ok(object) = protobuf::decode(res, body) else { return };
    let Some(Ok(bytes)) = protobuf::encode(&object) else { return };
    let again = protobuf::decode(res, &bytes).expect("what a2a encodes decodes");
    assert_eq!(again, object, "a decoded body does not survive a round trip");
});
