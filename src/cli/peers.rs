//! `a2a peers`: the hosts the running control plane found by mDNS (`a2a serve --listen`), with
//! their skills digest, free room, version and health. Read from the server's
//! `/apis/discovery.a2a.dev/v1alpha1/peers` (any user with the `view` role or above).
//!
//! mDNS only finds hosts: a peer shows `JOINED yes` (wide) once its gateway answered this
//! host over mutual TLS as a member of the same cluster, and only such peers are given work.
//! `BREAKER` is the peer's circuit breaker as this host sees it (`closed`, `open`,
//! `half-open`; see docs/network.md).

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::client::{ConnectArgs, Error, Result};
use super::get::{human_age, render_table};
use crate::discovery::peers::{PATH, Peer};

/// How `a2a peers` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PeersOutput {
    /// One line per peer: node, URL, skills digest, free CPU and memory, version, health, seen.
    #[default]
    Table,
    /// The table plus addresses, the skill count, the API URL and whether it joined.
    Wide,
    /// The server's `PeerList` as JSON.
    Json,
}

#[derive(Args, Debug)]
pub struct PeersArgs {
    #[arg(short = 'o', long, value_enum, default_value_t = PeersOutput::Table)]
    pub output: PeersOutput,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `a2a peers`; answers what to print.
pub async fn run(args: &PeersArgs) -> Result<String> {
    let c = args.connect.connect().await?;
    let request =
        http::Request::builder().method("GET").uri(PATH).body(Vec::new()).map_err(|e| Error::Api(e.to_string()))?;
    let doc: Value = c.client.request::<Value>(request).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 && s.details.is_none() => Error::Api(format!(
            "{} lists no peers: peers are found by the local control plane (`a2a serve --listen ADDR`)",
            c.url
        )),
        e => Error::from_kube(e, &c.url),
    })?;
    render(&doc, args.output)
}

/// The text of a `PeerList` in `output`'s form.
pub fn render(doc: &Value, output: PeersOutput) -> Result<String> {
    if output == PeersOutput::Json {
        return serde_json::to_string_pretty(doc).map_err(|e| Error::Api(e.to_string()));
    }
    let peers: Vec<Peer> = serde_json::from_value(doc.get("items").cloned().unwrap_or_default())
        .map_err(|e| Error::Api(format!("the server's peer list is not understood: {e}")))?;
    if peers.is_empty() {
        return Ok(match doc.get("discovery").and_then(Value::as_str) {
            Some("on") => "No peers found yet.".to_string(),
            _ => "mDNS discovery is off on this host: start `a2a serve --listen ADDR` with a LAN address (and \
                  without --no-mdns)."
                .to_string(),
        });
    }
    let wide = output == PeersOutput::Wide;
    let mut header: Vec<String> =
        ["NODE", "URL", "SKILLS", "CPU-FREE", "MEM-FREE", "VERSION", "HEALTH", "BREAKER", "SEEN"]
            .map(String::from)
            .to_vec();
    if wide {
        header.extend(["ADDRESSES", "NSKILLS", "API", "JOINED"].map(String::from));
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let mut row = vec![
                p.node_name.clone(),
                p.url.clone(),
                p.skills_digest.clone(),
                p.room.cpu_millicores.map_or("-".into(), crate::api::quantity::format_millicores),
                p.room.memory_bytes.map_or("-".into(), crate::api::quantity::format_bytes),
                p.version.clone(),
                match p.health {
                    crate::discovery::peers::Health::Up => "up".into(),
                    crate::discovery::peers::Health::Gone => "gone".into(),
                },
                if p.breaker.is_empty() { "closed".into() } else { p.breaker.clone() },
                human_age(&p.last_seen),
            ];
            if wide {
                row.extend([
                    p.addresses.join(","),
                    p.skills.to_string(),
                    if p.api_url.is_empty() { "-".into() } else { p.api_url.clone() },
                    if p.joined { "yes".into() } else { "no".into() },
                ]);
            }
            row
        })
        .collect();
    Ok(render_table(&header, &rows).trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_and_the_empty_cases() {
        let doc = json!({"discovery": "on", "items": [{
            "nodeName": "h2", "instance": "h2._a2a._tcp.local.", "addresses": ["10.0.0.2"],
            "url": "https://10.0.0.2:7443", "skillsDigest": "0a1b2c3d4e5f", "skills": 2,
            "room": {"cpuMillicores": 1500, "memoryBytes": 1073741824}, "version": "0.1.0",
            "lastSeen": "2026-01-01T00:00:00Z", "health": "up", "joined": false, "breaker": "open"}]});
        let table = render(&doc, PeersOutput::Table).unwrap();
        assert!(table.starts_with("NODE"), "{table}");
        assert!(table.contains("BREAKER") && table.contains("open"), "{table}");
        assert!(table.contains("h2") && table.contains("1500m") && table.contains("1Gi") && table.contains("up"));
        let wide = render(&doc, PeersOutput::Wide).unwrap();
        assert!(wide.contains("JOINED") && wide.contains("10.0.0.2") && wide.trim_end().ends_with("no"), "{wide}");
        assert_eq!(
            render(&json!({"discovery": "on", "items": []}), PeersOutput::Table).unwrap(),
            "No peers found yet."
        );
        assert!(render(&json!({"discovery": "off", "items": []}), PeersOutput::Table).unwrap().contains("off"));
    }
}
