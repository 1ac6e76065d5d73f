//! One A2A protocol binding as the client speaks it. A2A 1.0 defines the same operations
//! over three bindings (JSON-RPC, HTTP+JSON, gRPC); an agent card lists the ones an agent
//! serves, in its order of preference. Everything above the wire — card discovery, the
//! streaming capability check, following a task to its end, deadlines and cancellation — is
//! the same for every binding and lives in [`super::Client`]; a [`Transport`] only carries
//! one request and its answer. [`for_card`] is the one place a binding is chosen.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::client::{Error, EventStream, Http, Result};
use super::types::{
    AgentCard, AgentInterface, BINDING_HTTP_JSON, BINDING_JSONRPC, CancelTaskRequest, GetExtendedAgentCardRequest,
    GetTaskRequest, ListTasksRequest, ListTasksResponse, SendMessageRequest, SendMessageResponse,
    SubscribeToTaskRequest, Task,
};

/// A boxed future that can cross threads: [`Transport`] is used as `dyn Transport`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The A2A operations a2a sends to agents, over one binding. Implementations keep their
/// connection state; callers share one behind an `Arc`.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The `protocolBinding` spoken (`JSONRPC`, `HTTP+JSON`, `GRPC`).
    fn binding(&self) -> &'static str;
    /// Where requests go (the interface URL of the agent card).
    fn endpoint(&self) -> &str;
    /// `SendMessage`. Without `returnImmediately` the agent answers when the task is terminal
    /// or interrupted, so no request timeout applies.
    fn send_message(&self, request: SendMessageRequest) -> BoxFuture<'_, Result<SendMessageResponse>>;
    /// `SendStreamingMessage`: the task's events as they come.
    fn send_streaming_message(&self, request: SendMessageRequest) -> BoxFuture<'_, Result<EventStream>>;
    /// `GetTask`.
    fn get_task(&self, request: GetTaskRequest) -> BoxFuture<'_, Result<Task>>;
    /// `ListTasks`: one page of the tasks the agent lets the caller see.
    fn list_tasks(&self, request: ListTasksRequest) -> BoxFuture<'_, Result<ListTasksResponse>>;
    /// `CancelTask`; the answer is the task as the agent left it.
    fn cancel_task(&self, request: CancelTaskRequest) -> BoxFuture<'_, Result<Task>>;
    /// `SubscribeToTask`: the task's events until it is terminal.
    fn subscribe_to_task(&self, request: SubscribeToTaskRequest) -> BoxFuture<'_, Result<EventStream>>;
    /// `GetExtendedAgentCard`: the card the agent shows an authenticated caller.
    fn get_extended_agent_card(&self, request: GetExtendedAgentCardRequest) -> BoxFuture<'_, Result<AgentCard>>;
}

/// The bindings a2a speaks, in no particular order (the agent's order decides).
pub const SUPPORTED_BINDINGS: &[&str] = &[BINDING_JSONRPC, BINDING_HTTP_JSON];

/// Where requests go once the card has chosen the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// To the interface URL the card advertises (a relative one resolved against the agent's
    /// URL): the agent says where it is served. For agents a2a does not run (`url` agents).
    #[default]
    Card,
    /// To the agent's URL, whatever host the card advertises: the interface's path (and its
    /// binding) come from the card, its scheme, host and port are replaced by those of the URL
    /// the card was read from. For agents a2a runs, whose address a2a chose (a Service, a
    /// local port): an agent seldom knows the name it is reached by, and its card may name
    /// its pod, `localhost` or a bind address nobody else can reach.
    Base,
}

/// The transport for an agent whose card was read from `base` (relative interface URLs are
/// resolved against it): the first interface, in the card's order, whose binding a2a speaks
/// at a protocol version it speaks (see [`speaks_version`]), at the URL `addressing` says. A
/// card that offers none of them is refused, naming what it offers.
pub(crate) fn for_card(
    card: &AgentCard,
    base: &str,
    http: &Http,
    addressing: Addressing,
) -> Result<Arc<dyn Transport>> {
    // Through the base, only the card's path counts: its scheme and host are not checked.
    let endpoint = |interface: &AgentInterface| match addressing {
        Addressing::Base if !interface.url.starts_with('/') => rebase(base, &interface.url),
        _ => super::client::resolve(base, &interface.url),
    };
    for interface in &card.supported_interfaces {
        if !speaks_version(&interface.protocol_version) {
            continue;
        }
        let binding = interface.protocol_binding.as_str();
        if binding.eq_ignore_ascii_case(BINDING_JSONRPC) {
            let endpoint = endpoint(interface)?;
            return Ok(Arc::new(super::jsonrpc::JsonRpc::new(http.clone(), base, endpoint)));
        }
        if binding.eq_ignore_ascii_case(BINDING_HTTP_JSON) {
            let endpoint = endpoint(interface)?;
            let tenant = interface.tenant.clone().filter(|t| !t.is_empty());
            return Ok(Arc::new(super::rest::HttpJson::new(http.clone(), endpoint, tenant)));
        }
    }
    let offered: Vec<String> = card.supported_interfaces.iter().map(describe).collect();
    Err(Error::NoSupportedInterface {
        url: format!("{base}{}", super::types::AGENT_CARD_PATH),
        offered: if offered.is_empty() { "nothing".into() } else { offered.join(", ") },
    })
}

/// `url` with the scheme, host and port of `base`: its path and query are kept.
fn rebase(base: &str, url: &str) -> Result<String> {
    let parse =
        |u: &str| u.parse::<http::Uri>().map_err(|e| Error::InvalidUrl { url: u.to_owned(), reason: e.to_string() });
    let (b, u) = (parse(base)?, parse(url)?);
    let (Some(scheme), Some(authority)) = (b.scheme_str(), b.authority()) else {
        return Err(Error::InvalidUrl { url: base.to_owned(), reason: "it has no scheme or host".into() });
    };
    let path = u.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("{scheme}://{authority}{path}"))
}

/// Whether a2a speaks an interface's `protocolVersion`: any 1.x (minor versions add, they do
/// not break), or none given (a card that leaves the field out is read as the version whose
/// card shape it has, 1.0). 0.3 and other majors are not spoken.
fn speaks_version(version: &str) -> bool {
    let version = version.trim();
    version.is_empty() || version == "1" || version.starts_with("1.")
}

fn describe(i: &AgentInterface) -> String {
    if i.protocol_version.trim().is_empty() {
        format!("{} at {}", i.protocol_binding, i.url)
    } else {
        format!("{} {} at {}", i.protocol_binding, i.protocol_version, i.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::a2a::types::AgentInterface;

    fn http() -> Http {
        Http::new(&crate::a2a::tls::TlsOptions::default()).expect("http")
    }

    fn card(interfaces: &[(&str, &str)]) -> AgentCard {
        versioned(&interfaces.iter().map(|(b, u)| (*b, *u, "1.0")).collect::<Vec<_>>())
    }

    fn versioned(interfaces: &[(&str, &str, &str)]) -> AgentCard {
        AgentCard {
            supported_interfaces: interfaces
                .iter()
                .map(|(binding, url, version)| AgentInterface {
                    url: (*url).into(),
                    protocol_binding: (*binding).into(),
                    protocol_version: (*version).into(),
                    tenant: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_binding_a2a_speaks_in_the_cards_order_is_chosen() {
        let c = card(&[("GRPC", "http://h:9/grpc"), ("jsonrpc", "/a2a"), ("HTTP+JSON", "http://h:9/rest")]);
        let t = for_card(&c, "http://h:9", &http(), Addressing::Card).expect("a transport");
        assert_eq!(t.binding(), "JSONRPC");
        assert_eq!(t.endpoint(), "http://h:9/a2a", "a relative interface URL is resolved against the agent");
        let c = card(&[("GRPC", "http://h:9/grpc"), ("http+json", "/rest/"), ("JSONRPC", "http://h:9/a2a")]);
        let t = for_card(&c, "http://h:9", &http(), Addressing::Card).expect("a transport");
        assert_eq!(t.binding(), "HTTP+JSON");
        assert_eq!(t.endpoint(), "http://h:9/rest", "the routes hang below the interface URL");
    }

    #[test]
    fn through_the_agents_url_the_card_chooses_the_binding_and_path_but_not_the_host() {
        // An agent behind a Service that advertises its pod's address, or localhost.
        let c = card(&[
            ("GRPC", "http://10.1.2.3:9000/"),
            ("HTTP+JSON", "http://10.1.2.3:8080/v1/"),
            ("JSONRPC", "http://localhost:8080/"),
        ]);
        let base = "http://writer.team.svc:8080";
        let t = for_card(&c, base, &http(), Addressing::Base).expect("a transport");
        assert_eq!(t.binding(), "HTTP+JSON", "the binding is still the card's first one a2a speaks");
        assert_eq!(t.endpoint(), "http://writer.team.svc:8080/v1", "the card's path below the Service's address");
        let t =
            for_card(&card(&[("JSONRPC", "https://agent.example/rpc?x=1")]), base, &http(), Addressing::Base).unwrap();
        assert_eq!(t.endpoint(), "http://writer.team.svc:8080/rpc?x=1", "scheme, host and port are the Service's");
        let t = for_card(&card(&[("JSONRPC", "/a2a")]), base, &http(), Addressing::Base).unwrap();
        assert_eq!(t.endpoint(), "http://writer.team.svc:8080/a2a");
        // Following the card goes where it says.
        let t = for_card(&c, base, &http(), Addressing::Card).unwrap();
        assert_eq!(t.endpoint(), "http://10.1.2.3:8080/v1");
    }

    #[test]
    fn an_interface_at_a_protocol_version_a2a_does_not_speak_is_passed_over() {
        let c = versioned(&[("HTTP+JSON", "http://h:9/v03", "0.3"), ("JSONRPC", "http://h:9/", "1.0")]);
        assert_eq!(for_card(&c, "http://h:9", &http(), Addressing::Card).expect("a transport").binding(), "JSONRPC");
        let c = versioned(&[("JSONRPC", "http://h:9/", ""), ("HTTP+JSON", "http://h:9/", "1.1")]);
        assert_eq!(for_card(&c, "http://h:9", &http(), Addressing::Card).expect("a transport").binding(), "JSONRPC");
        let c = versioned(&[("JSONRPC", "http://h:9/", "2.0"), ("HTTP+JSON", "http://h:9/", "1.1")]);
        assert_eq!(for_card(&c, "http://h:9", &http(), Addressing::Card).expect("a transport").binding(), "HTTP+JSON");
        let e = for_card(&versioned(&[("JSONRPC", "http://h:9/", "0.3")]), "http://h:9", &http(), Addressing::Card)
            .unwrap_err();
        assert!(e.to_string().contains("it offers: JSONRPC 0.3 at http://h:9/"), "{e}");
    }

    #[test]
    fn a_card_without_a_binding_a2a_speaks_is_refused_naming_what_it_offers() {
        let e = for_card(&card(&[("GRPC", "http://h:9/grpc")]), "http://h:9", &http(), Addressing::Card).unwrap_err();
        assert_eq!(e.metric_label(), "no_supported_interface");
        assert!(e.to_string().contains("GRPC 1.0 at http://h:9/grpc"), "{e}");
        let e = for_card(&card(&[]), "http://h:9", &http(), Addressing::Card).unwrap_err();
        assert!(e.to_string().contains("it offers: nothing"), "{e}");
    }
}
