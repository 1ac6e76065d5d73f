//! `a2a operator`: run the Kubernetes operator (what the Helm chart's Deployment runs):
//! leader election, the Agent controller, budget status, the workflow engine, and
//! `/healthz`, `/readyz`, `/metrics` on the metrics port.

use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::values;
use crate::api::Priority;
use crate::cluster::operator::{self, OperatorConfig, Status};
use crate::cluster::workload::WorkloadConfig;

#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// The port (all interfaces) serving /healthz, /readyz and /metrics; 0 picks a free one.
    #[arg(long, value_name = "PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Compete for the `a2a-operator` Lease in POD_NAMESPACE, so only one replica reconciles.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// How long a leader's lease is valid without renewal (e.g. 15s).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = values::duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps reconciling while renewals fail before it exits (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = values::duration)]
    pub renew_deadline: Duration,
    /// Also write a ResourceQuota (`a2a-budgets`) in every namespace whose agents draw from
    /// ResourceBudgets: `limits.memory`/`limits.cpu` = the sum of those budgets' limits. Needs
    /// RBAC on resourcequotas (the chart's resourceQuota.enabled).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = ArgAction::Set)]
    pub resource_quota: bool,
    /// The URL budget alert notifications link to (the webhook payload's `externalURL`), e.g.
    /// the cluster's dashboard.
    #[arg(long, value_name = "URL", env = "A2A_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Watch Agents and Workflows in this namespace only. Repeatable; none: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE", conflicts_with = "all_namespaces")]
    pub namespaces: Vec<String>,
    /// Watch every namespace (the default when no --namespace is given).
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// The Kubernetes PriorityClass for agents of an a2a priority, as PRIORITY=CLASS
    /// (critical, high, normal, low, background). Repeatable.
    #[arg(long = "priority-class", value_name = "PRIORITY=CLASS", value_parser = values::priority_class)]
    pub priority_classes: Vec<(Priority, String)>,
}

/// Why the operator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("connecting to Kubernetes (in-cluster service account, else KUBECONFIG or ~/.kube/config): {0}")]
    Connect(#[source] kube::Error),
    #[error("listening on metrics port {port}: {source}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// A wrong configuration, or leadership lost.
    #[error(transparent)]
    Operator(#[from] operator::Error),
}

/// The operator's configuration from flags and the pod's environment.
pub fn config(args: &OperatorArgs) -> Result<OperatorConfig, Error> {
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default();
    let lease_namespace = std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty()).unwrap_or_default();
    let mut c = OperatorConfig::new(&lease_namespace, &identity);
    c.namespaces = args.namespaces.clone();
    c.leader_election = args.leader_election;
    c.lease_duration = args.lease_duration;
    c.renew_deadline = args.renew_deadline;
    c.resource_quota = args.resource_quota;
    c.external_url = args.external_url.clone().unwrap_or_default();
    c.retry_period = (args.renew_deadline / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    c.workload = WorkloadConfig { priority_classes: args.priority_classes.iter().cloned().collect() };
    c.check()?;
    Ok(c)
}

/// Runs until SIGTERM/SIGINT (Ok, lease released) or until leadership is lost (Err).
pub fn run(args: &OperatorArgs) -> Result<(), Error> {
    let config = config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(Error::Connect)?;
        let status = Arc::new(Status::default());
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.metrics_port))
            .await
            .map_err(|source| Error::Listen { port: args.metrics_port, source })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.metrics_port);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let http = {
            let status = status.clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = operator::serve_http(listener, status, shutdown).await {
                    tracing::error!(error = %e, "metrics server failed");
                }
            })
        };
        tracing::info!(
            port,
            identity = %config.identity,
            leader_election = config.leader_election,
            namespaces = ?config.namespaces,
            "a2a operator starting"
        );
        let signals = super::serve::Signals::install();
        let signal = async {
            match signals {
                Ok(s) => s.wait().await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot handle signals; running until killed");
                    std::future::pending::<()>().await;
                }
            }
            tracing::info!("signal received; stopping controllers");
        };
        let result = operator::run(client, config, status, signal).await;
        let _ = stop_tx.send(true);
        let _ = http.await;
        Ok(result?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::values::priority_class as parse_priority_class;

    #[test]
    fn priority_classes_parse_and_bad_ones_say_why() {
        assert_eq!(parse_priority_class("critical=a2a-crit"), Ok((Priority::Critical, "a2a-crit".to_owned())));
        assert!(parse_priority_class("urgent=x").unwrap_err().to_string().contains("unknown priority \"urgent\""));
        assert!(parse_priority_class("high").unwrap_err().to_string().contains("PRIORITY=CLASS"));
        assert!(parse_priority_class("high=").unwrap_err().to_string().contains("no PriorityClass"));
    }
}
