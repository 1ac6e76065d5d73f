//! Every part of a task's output, kept: text parts joined for `{{ tasks.NAME.output }}`, data
//! parts as JSON for `{{ tasks.NAME.data.field }}`, file parts decoded and named for `a2a
//! output --file`. Pure: the engine stores what this decides ([`super::outputs`]).

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::Value;

use super::outputs::MAX_OUTPUT_BYTES;
use crate::a2a::types::{Part, PartContent};
use crate::api::workflow::OutputPart;

/// Data parts up to this size (as JSON) live in the task's status; larger data is kept beside
/// the workflow.
pub const MAX_DATA_IN_STATUS: usize = 64 * 1024;

/// A file part's decoded bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Its position among the output's file parts (0-based): the storage key's number.
    pub index: usize,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// An output taken apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// The text parts, joined by newlines.
    pub text: String,
    /// The data parts: the one value, or an array of several.
    pub data: Option<Value>,
    /// The file parts given as bytes, to store.
    pub files: Vec<File>,
    /// Every part in order, for status.
    pub listing: Vec<OutputPart>,
}

/// The storage key (the "task" part of the ConfigMap names) of file `index` of `task`.
pub fn file_key(task: &str, index: usize) -> String {
    format!("{task}.file-{index}")
}

/// The storage key of `task`'s data when it is too large for status.
pub fn data_key(task: &str) -> String {
    format!("{task}.data")
}

/// Takes `parts` apart. File bytes over the 16 MiB cap (all files of the output together),
/// or that are not base64, are listed with the reason and not kept.
pub fn collect(parts: &[Part]) -> Collected {
    let mut out = Collected::default();
    let mut texts = Vec::new();
    let mut data = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut file_bytes = 0usize;
    let mut files = 0usize;
    for p in parts {
        let mut entry = OutputPart { media_type: p.media_type.clone(), ..Default::default() };
        match &p.content {
            PartContent::Text(t) => {
                entry.kind = "text".into();
                entry.bytes = t.len() as u64;
                texts.push(t.as_str());
            }
            PartContent::Data(v) => {
                entry.kind = "data".into();
                entry.bytes = v.to_string().len() as u64;
                data.push(v.clone());
            }
            PartContent::Raw(_) | PartContent::Url(_) => {
                entry.kind = "file".into();
                let base =
                    p.filename.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("file-{}", files + 1));
                let mut name = base.clone();
                let mut n = 2;
                while !names.insert(name.clone()) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                entry.name = Some(name.clone());
                match &p.content {
                    PartContent::Url(url) => entry.url = Some(url.clone()),
                    PartContent::Raw(b64) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                        Err(e) => entry.error = Some(format!("not kept: the bytes are not base64 ({e})")),
                        Ok(bytes) if file_bytes + bytes.len() > MAX_OUTPUT_BYTES => {
                            entry.bytes = bytes.len() as u64;
                            entry.error = Some(format!(
                                "not kept: the output's files pass the {} MiB cap",
                                MAX_OUTPUT_BYTES >> 20
                            ));
                        }
                        Ok(bytes) => {
                            file_bytes += bytes.len();
                            entry.bytes = bytes.len() as u64;
                            out.files.push(File { index: files, name, bytes });
                        }
                    },
                    _ => {}
                }
                files += 1;
            }
        }
        out.listing.push(entry);
    }
    out.text = texts.join("\n");
    out.data = match data.len() {
        0 => None,
        1 => data.pop(),
        _ => Some(Value::Array(data)),
    };
    out
}

/// The value at `path` (`field.sub.0`: object members and array indices) in `data`, as
/// template text: a string as it is, anything else as compact JSON. `None` when the path
/// leads nowhere.
pub fn lookup<'a>(data: &'a Value, path: Option<&str>) -> Option<Cow<'a, str>> {
    let mut at = data;
    for segment in path.into_iter().flat_map(|p| p.split('.')) {
        at = match at {
            Value::Object(m) => m.get(segment)?,
            Value::Array(a) => a.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(match at {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn part(v: Value) -> Part {
        serde_json::from_value(v).expect("part")
    }

    #[test]
    fn every_part_is_kept_in_order_with_text_joined_and_data_as_json() {
        let c = collect(&[
            part(json!({"text": "hello"})),
            part(json!({"data": {"city": "Paris"}})),
            part(json!({"raw": "AAEC/w==", "filename": "b.bin", "mediaType": "application/octet-stream"})),
            part(json!({"text": "world"})),
            part(json!({"url": "https://example.org/r.pdf", "filename": "b.bin"})),
            part(json!({"raw": "AA=="})),
        ]);
        assert_eq!(c.text, "hello\nworld");
        assert_eq!(c.data, Some(json!({"city": "Paris"})));
        assert_eq!(
            c.files,
            [
                File { index: 0, name: "b.bin".into(), bytes: vec![0, 1, 2, 255] },
                File { index: 2, name: "file-3".into(), bytes: vec![0] },
            ]
        );
        let kinds: Vec<(&str, Option<&str>, u64)> =
            c.listing.iter().map(|p| (p.kind.as_str(), p.name.as_deref(), p.bytes)).collect();
        assert_eq!(
            kinds,
            [
                ("text", None, 5),
                ("data", None, 16),
                ("file", Some("b.bin"), 4),
                ("text", None, 5),
                ("file", Some("b.bin-2"), 0),
                ("file", Some("file-3"), 1),
            ]
        );
        assert_eq!(c.listing[2].media_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(c.listing[4].url.as_deref(), Some("https://example.org/r.pdf"));
        let two = collect(&[part(json!({"data": {"a": 1}})), part(json!({"data": [2]}))]);
        assert_eq!(two.data, Some(json!([{"a": 1}, [2]])), "several data parts are an array");
    }

    #[test]
    fn bytes_that_are_not_base64_are_listed_with_the_reason() {
        let c = collect(&[part(json!({"raw": "not base64!"}))]);
        assert!(c.files.is_empty());
        assert!(c.listing[0].error.as_deref().unwrap_or_default().starts_with("not kept: the bytes are not base64"));
    }

    #[test]
    fn data_paths_reach_members_and_indices() {
        let d = json!({"trip": {"city": "Paris", "nights": 3, "stops": ["Lyon", {"at": "Dijon"}]}});
        assert_eq!(lookup(&d, Some("trip.city")).as_deref(), Some("Paris"));
        assert_eq!(lookup(&d, Some("trip.nights")).as_deref(), Some("3"));
        assert_eq!(lookup(&d, Some("trip.stops.1.at")).as_deref(), Some("Dijon"));
        assert_eq!(lookup(&d, Some("trip.stops")).as_deref(), Some(r#"["Lyon",{"at":"Dijon"}]"#));
        assert_eq!(lookup(&d, None).as_deref(), Some(d.to_string().as_str()));
        assert_eq!(lookup(&d, Some("trip.hotel")), None);
        assert_eq!(lookup(&d, Some("trip.stops.9")), None);
        assert_eq!(lookup(&d, Some("trip.city.x")), None);
    }
}
