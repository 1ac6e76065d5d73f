//! `a2a operator`: run the Kubernetes operator (what the Helm chart's Deployment runs):
//! leader election, the Agent controller, budget status, the workflow engine, and
//! `/healthz`, `/readyz`, `/metrics` on the metrics port.

use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::api::Priority;
use crate::api::quantity::{DurationKind, ScalarKind};
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
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps reconciling while renewals fail before it exits (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// Also write a ResourceQuota (`a2a-budgets`) in every namespace whose agents draw from
    /// ResourceBudgets: `limits.memory`/`limits.cpu` = the sum of those budgets' limits. Needs
    /// RBAC on resourcequotas (the chart's resourceQuota.enabled).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = ArgAction::Set)]
    pub resource_quota: bool,
    /// Watch Agents and Workflows in this namespace only. Repeatable; none: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE", conflicts_with = "all_namespaces")]
    pub namespaces: Vec<String>,
    /// Watch every namespace (the default when no --namespace is given).
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// The Kubernetes PriorityClass for agents of an a2a priority, as PRIORITY=CLASS
    /// (critical, high, normal, low, background). Repeatable.
    #[arg(long = "priority-class", value_name = "PRIORITY=CLASS", value_parser = parse_priority_class)]
    pub priority_classes: Vec<(Priority, String)>,
}

fn parse_duration(text: &str) -> Result<Duration, crate::api::quantity::Error> {
    DurationKind::parse(text)
}

fn parse_priority_class(text: &str) -> Result<(Priority, String), String> {
    let (p, class) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not PRIORITY=CLASS (example: critical=a2a-critical)"))?;
    let priority = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Background]
        .into_iter()
        .find(|x| x.as_str() == p.trim())
        .ok_or_else(|| format!("unknown priority {p:?}; priorities are critical, high, normal, low, background"))?;
    let class = class.trim();
    if class.is_empty() {
        return Err(format!("{text:?} names no PriorityClass after '='"));
    }
    Ok((priority, class.to_owned()))
}

/// The operator's configuration from flags and the pod's environment.
pub fn config(args: &OperatorArgs) -> Result<OperatorConfig, String> {
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
    c.retry_period = (args.renew_deadline / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    c.workload = WorkloadConfig { priority_classes: args.priority_classes.iter().cloned().collect() };
    c.check().map_err(|e| e.to_string())?;
    Ok(c)
}

/// Runs until SIGTERM/SIGINT (Ok, lease released) or until leadership is lost (Err).
pub fn run(args: &OperatorArgs) -> Result<(), String> {
    let config = config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("connecting to Kubernetes (in-cluster service account, else KUBECONFIG or ~/.kube/config): {e}")
        })?;
        let status = Arc::new(Status::default());
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.metrics_port))
            .await
            .map_err(|e| format!("listening on metrics port {}: {e}", args.metrics_port))?;
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
        result.map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_classes_parse_and_bad_ones_say_why() {
        assert_eq!(parse_priority_class("critical=a2a-crit"), Ok((Priority::Critical, "a2a-crit".to_owned())));
        assert!(parse_priority_class("urgent=x").unwrap_err().contains("unknown priority \"urgent\""));
        assert!(parse_priority_class("high").unwrap_err().contains("PRIORITY=CLASS"));
        assert!(parse_priority_class("high=").unwrap_err().contains("no PriorityClass"));
    }
}
