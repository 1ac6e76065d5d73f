//! What a host advertises in its `_a2a._tcp` TXT record, computed from its Agents and its
//! `host` ResourceBudget as plain functions.
//!
//! | key | value |
//! |---|---|
//! | `txtvers` | `1`, the format of these keys |
//! | `node` | the node name |
//! | `url` | the gateway's URL (`$A2A_HOME/gateway.url`), else the API server's |
//! | `api` | the API server's URL |
//! | `skills` | the first 12 hex digits of the SHA-256 of the sorted skills of the Ready agents, one per line; `none` without any |
//! | `nskills` | how many skills that is |
//! | `cpu` | millicores the `host` budget can still admit (absent: unlimited) |
//! | `mem` | bytes the `host` budget can still admit (absent: unlimited) |
//! | `version` | the a2a version |

use std::collections::BTreeSet;

use crate::api::agent::AgentPhase;
use crate::api::agent::Protocol;
use crate::api::{Agent, ResourceBudget};
use crate::controller::admission::{self, Host};

use super::peers::Room;

/// What changes while a host runs (the rest of the TXT record is fixed at start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advert {
    pub skills: BTreeSet<String>,
    pub room: Room,
    /// Where to reach the host (the gateway's URL when it has one).
    pub url: String,
}

/// Whether an agent takes work now, as the engine decides it: a stdio agent once it runs,
/// an A2A agent once it has a Ready endpoint.
pub fn is_ready(a: &Agent) -> bool {
    let Some(status) = &a.status else { return false };
    match a.spec.protocol() {
        Protocol::Stdio => matches!(status.phase, Some(AgentPhase::Running)) && a.spec.replicas() > 0,
        Protocol::A2a => !status.endpoints.is_empty(),
    }
}

/// The skills of the Ready agents: those of their specs and of their cards.
pub fn offered_skills<'a>(agents: impl IntoIterator<Item = &'a Agent>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in agents.into_iter().filter(|a| is_ready(a)) {
        out.extend(a.spec.skills.iter().cloned());
        if let Some(card) = a.status.as_ref().and_then(|s| s.card.as_ref()) {
            out.extend(card.skills.iter().cloned());
        }
    }
    out
}

/// The short digest of a set of skills (`none` for no skill): equal sets, equal digests.
pub fn digest(skills: &BTreeSet<String>) -> String {
    if skills.is_empty() {
        return "none".into();
    }
    let text: Vec<&str> = skills.iter().map(String::as_str).collect();
    let d = ring::digest::digest(&ring::digest::SHA256, text.join("\n").as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The room the `host` budget has left for admission: its limits less what it allocated.
/// No budget (yet) or no limit: unlimited (`None`).
pub fn room(budget: Option<&ResourceBudget>, cores: u32) -> Room {
    let Some(b) = budget else { return Room::default() };
    let limits = admission::budget_limits(&b.spec, Host::Local { cores }).unwrap_or_default();
    let allocated = b.status.as_ref().and_then(|s| s.allocated.as_ref());
    let (mem, cpu) = allocated.map_or((0, 0), |a| (a.memory_bytes, a.cpu_millicores));
    Room {
        cpu_millicores: limits.cpu_millis.map(|l| l.saturating_sub(cpu)),
        memory_bytes: limits.memory.map(|l| l.saturating_sub(mem)),
    }
}

/// The TXT properties, in a fixed order.
pub fn txt(node: &str, api_url: &str, advert: &Advert) -> Vec<(String, String)> {
    let mut out = vec![
        ("txtvers".to_string(), "1".to_string()),
        ("node".to_string(), node.to_string()),
        ("url".to_string(), advert.url.clone()),
        ("api".to_string(), api_url.to_string()),
        ("skills".to_string(), digest(&advert.skills)),
        ("nskills".to_string(), advert.skills.len().to_string()),
    ];
    if let Some(c) = advert.room.cpu_millicores {
        out.push(("cpu".into(), c.to_string()));
    }
    if let Some(m) = advert.room.memory_bytes {
        out.push(("mem".into(), m.to_string()));
    }
    out.push(("version".into(), env!("CARGO_PKG_VERSION").to_string()));
    // A TXT string is at most 255 bytes: a longer value (a very long URL) is left out.
    out.retain(|(k, v)| k.len() + 1 + v.len() <= 255);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(yaml: &str) -> Agent {
        serde_yaml_ng::from_str(yaml).expect("agent")
    }

    #[test]
    fn only_ready_agents_offer_their_skills() {
        let ready = agent(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec: {command: [cat], protocol: stdio, skills: [sum]}\nstatus: {phase: Running}\n",
        );
        let pending = agent(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {name: b}\nspec: {command: [cat], protocol: stdio, skills: [mul]}\nstatus: {phase: Pending}\n",
        );
        let a2a = agent(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {name: c}\nspec: {command: [x], skills: [x]}\nstatus: {endpoints: ['http://127.0.0.1:1'], card: {name: c, skills: [card]}}\n",
        );
        let skills = offered_skills([&ready, &pending, &a2a]);
        assert_eq!(skills.into_iter().collect::<Vec<_>>(), ["card", "sum", "x"]);
    }

    #[test]
    fn the_digest_is_short_stable_and_says_none_when_empty() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(digest(&s(&[])), "none");
        assert_eq!(digest(&s(&["a", "b"])), digest(&s(&["b", "a"])));
        assert_ne!(digest(&s(&["a"])), digest(&s(&["a", "b"])));
        assert_eq!(digest(&s(&["a"])).len(), 12);
    }

    #[test]
    fn room_is_the_limit_less_what_is_allocated() {
        let b: ResourceBudget = serde_yaml_ng::from_str(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {name: host}\nspec: {limits: {memory: 1Gi, cpu: '50%'}}\nstatus: {allocated: {memoryBytes: 268435456, cpuMillicores: 250}}\n",
        )
        .expect("budget");
        let r = room(Some(&b), 4);
        assert_eq!(r, Room { cpu_millicores: Some(1750), memory_bytes: Some(768 * 1024 * 1024) });
        assert_eq!(room(None, 4), Room::default());
    }

    #[test]
    fn txt_has_every_key_and_drops_what_does_not_fit() {
        let advert = Advert { url: "https://10.0.0.1:7443".into(), ..Default::default() };
        let t = txt("h1", "https://10.0.0.1:7443", &advert);
        let keys: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["txtvers", "node", "url", "api", "skills", "nskills", "version"]);
        let long = Advert { url: format!("https://{}", "x".repeat(300)), ..Default::default() };
        assert!(txt("h1", "https://a", &long).iter().all(|(k, _)| k != "url"));
    }
}
