//! A2A protocol 1.0: the wire types, a client whose requests travel on the binding the agent
//! card names (one [`transport::Transport`] per binding: JSON-RPC and HTTP+JSON), and the server side
//! of the sample agent (`a2a demo-agent`).

pub mod auth;
pub mod client;
pub mod jsonrpc;
pub mod rest;
pub mod retry_after;
pub mod server;
pub(crate) mod sse;
pub mod tls;
pub mod transport;
pub mod types;

pub use client::{CancelOutcome, Client, ClientOptions, EventStream, ExtendedCard, FollowOptions};
pub use transport::Transport;
pub use types::*;
