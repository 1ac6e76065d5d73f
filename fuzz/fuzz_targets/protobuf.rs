//! Protobuf request bodies of the built-in kinds: the first byte picks the kind, the rest is
//! the body. What decodes encodes, and after that first pass, decoding and encoding again
//! changes nothing. (The first pass may: a MicroTime of a few nanoseconds after the epoch
//! reads as `1970-01-01T00:00:00.000000Z`, which encodes as the empty time message, which
//! reads as no time at all; Go's MicroTime does the same.)
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
    let once = protobuf::decode(res, &bytes).expect("what a2a encodes decodes");
    let Some(Ok(bytes)) = protobuf::encode(&once) else {
        panic!("what a2a decoded from its own bytes does not encode")
    };
    let twice = protobuf::decode(res, &bytes).expect("what a2a encodes decodes");
    assert_eq!(twice, once, "a body read back from a2a's own encoding changes on a second pass");
});
