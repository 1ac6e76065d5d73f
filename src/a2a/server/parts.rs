//! The demo agent's `data` and `file` skills: answers that are a DataPart or a FilePart, so
//! workflows (and tests) can see every kind of part flow through.

use serde_json::Value;

use super::super::types::{Part, PartContent};
use super::Error;

/// The largest file the `file` skill makes.
const MAX_FILE_BYTES: usize = 16 << 20;

/// `data JSON`: a text part `data` and a data part with the JSON (or the message's own data).
pub(super) fn data(text: &str, given: Option<&Value>) -> Result<Vec<Part>, Error> {
    let value = match (text.trim(), given) {
        ("", Some(d)) => d.clone(),
        ("", None) => return Err(Error::DataSkill("give the JSON to answer with: data {\"key\": 1}".into())),
        (json, _) => serde_json::from_str(json).map_err(|e| Error::DataSkill(format!("not JSON: {e}")))?,
    };
    Ok(vec![Part::text("data"), Part::data(value)])
}

/// `file NAME [SIZE]`: a text part naming the file and a file part of SIZE bytes counting
/// 0..=255 over and over.
pub(super) fn file(text: &str) -> Result<Vec<Part>, Error> {
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or("file.bin").to_owned();
    let size = match words.next() {
        None => 256,
        Some(w) => w.parse::<usize>().map_err(|_| Error::FileSkill(format!("size {w:?} is not a number of bytes")))?,
    };
    if size > MAX_FILE_BYTES {
        return Err(Error::FileSkill(format!("{size} bytes is more than {MAX_FILE_BYTES}")));
    }
    let bytes: Vec<u8> = (0..size).map(|i| (i % 256) as u8).collect();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let mut part = Part::text(String::new());
    part.content = PartContent::Raw(raw);
    part.filename = Some(name.clone());
    part.media_type = Some("application/octet-stream".to_owned());
    Ok(vec![Part::text(format!("{name} ({size} bytes)")), part])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_skill_counts_every_byte_value() {
        let parts = file("all.bin 300").expect("file");
        let PartContent::Raw(raw) = &parts[1].content else { panic!("a raw part: {parts:?}") };
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).expect("base64");
        assert_eq!(bytes.len(), 300);
        assert_eq!(bytes[255], 255);
        assert_eq!(bytes[256], 0);
        assert_eq!(parts[1].filename.as_deref(), Some("all.bin"));
        assert!(file("x.bin lots").is_err());
    }

    #[test]
    fn the_data_skill_answers_with_the_json_given() {
        let parts = data(r#"{"a": [1, 2]}"#, None).expect("data");
        assert_eq!(parts[1].as_data(), Some(&serde_json::json!({"a": [1, 2]})));
        assert!(data("{nope", None).unwrap_err().to_string().starts_with("data: not JSON"));
    }
}
