//! Set-up shared by the benches that run the API server in process.

use std::path::Path;

use a2a::apiserver::{Server, ServerConfig, ServerHandle};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// An API server on a free port with its home in `home`, and a client of it through the
/// kubeconfig it wrote, as every other client connects.
pub async fn api_server(home: &Path) -> (ServerHandle, kube::Client) {
    api_server_with(ServerConfig::new(home).port(0)).await
}

/// The same with a configuration of the bench's own.
pub async fn api_server_with(config: ServerConfig) -> (ServerHandle, kube::Client) {
    let server = Server::start(config).await.expect("api server");
    let kc = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    let client = kube::Client::try_from(config).expect("client");
    (server, client)
}
