//! A2A messages as a2a reads them from agents and clients: JSON-RPC requests and responses,
//! stream events, tasks and agent cards. What reads must write back and read the same.
#![no_main]
use a2a::a2a::types::{
    AgentCard, JsonRpcRequest, JsonRpcResponse, Message, SendMessageRequest, SendMessageResponse, StreamResponse,
    Task,
};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&v).expect("serializes");
        let back: T = serde_json::from_slice(&text).expect("reads what it wrote");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<JsonRpcRequest<SendMessageRequest>>(data);
    roundtrip::<JsonRpcResponse<SendMessageResponse>>(data);
    roundtrip::<JsonRpcResponse<StreamResponse>>(data);
    roundtrip::<Message>(data);
    roundtrip::<Task>(data);
    roundtrip::<AgentCard>(data);
});
