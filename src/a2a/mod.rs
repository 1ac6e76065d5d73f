//! A2A protocol 1.0 (JSON-RPC binding): the wire types, a client, and the server side of the
//! sample agent (`a2a demo-agent`).

pub mod client;
pub mod server;
pub mod types;

pub use client::{CancelOutcome, Client, EventStream, FollowOptions};
pub use types::*;
