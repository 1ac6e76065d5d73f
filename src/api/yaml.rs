//! YAML text → JSON values, for everything a2a reads as YAML (manifests, API request bodies).
//!
//! Two bounds the YAML parser does not give by itself:
//!
//! - **Depth, before parsing.** libyaml's scanner revisits every open flow collection for
//!   each token, so `[[[[…` costs time in the square of its depth: 100,000 levels (200 KB)
//!   took over a minute. serde_yaml_ng's own recursion limit (128) only applies once the
//!   whole document has been scanned. [`check_depth`] walks the parser's events and stops
//!   at the first collection deeper than [`MAX_DEPTH`], so a deep document costs what its
//!   first [`MAX_DEPTH`] levels cost (microseconds); a document within the bound is then
//!   parsed for real.
//! - **Numbers JSON cannot hold.** YAML has `.inf`, `-.inf` and `.nan`; a JSON value cannot
//!   hold them, and serde_json's `Value` silently turns them into `null`, which validation
//!   then reads as "not set" (`memory: .inf` became no limit at all). They are refused here,
//!   with the field named.
//!
//! A leading byte order mark is skipped, as kubectl does.

// The depth walk drives libyaml's event parser (the same scanner serde_yaml_ng uses, so both
// read the text the same way); its API is C-shaped. The crate root is `deny(unsafe_code)`.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use unsafe_libyaml as unsafe_yaml;

/// How deep a YAML document may nest (mappings and lists). serde_json reads at most 128
/// levels, so everything a2a stores can be read back.
pub const MAX_DEPTH: usize = 100;

/// Why a YAML text is not a JSON value.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nests deeper than {MAX_DEPTH} levels ({at})")]
    TooDeep { at: String },
    /// `.inf`, `-.inf` or `.nan`.
    #[error("{path}: {value} is not a number a2a accepts (infinity and NaN have no JSON form)")]
    NotFinite { path: String, value: &'static str },
    /// Not YAML, or not a document serde_yaml_ng reads.
    #[error("{0}")]
    Syntax(#[source] serde_yaml_ng::Error),
    /// The bytes are not UTF-8.
    #[error("is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
}

/// Skips a UTF-8 byte order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The one document of `text` as JSON (empty text is `null`); a stream of several documents
/// is an error.
pub fn from_str(text: &str) -> Result<Value, YamlError> {
    let text = strip_bom(text);
    check_depth(text.as_bytes(), MAX_DEPTH)?;
    let state = State::default();
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let result = JsonSeed { state: &state }.deserialize(de);
    finish(result, &state)
}

/// [`from_str`] for request bodies.
pub fn from_slice(bytes: &[u8]) -> Result<Value, YamlError> {
    from_str(std::str::from_utf8(bytes).map_err(|e| YamlError::NotUtf8 { offset: e.valid_up_to() })?)
}

/// Every document of a YAML stream as JSON, empty documents as `null`. The first error ends
/// the stream (YAML cannot be resynchronised after one) and comes with its 0-based document
/// index.
pub fn documents(text: &str) -> (Vec<Value>, Option<(usize, YamlError)>) {
    let text = strip_bom(text);
    // On a deep document the walk stops there; the documents before it are read for real,
    // so that their errors come first.
    let (read, deep) = match walk(text.as_bytes(), MAX_DEPTH) {
        Ok(()) => (usize::MAX, None),
        Err((document, e)) => (document, Some((document, e))),
    };
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate().take(read) {
        let state = State::default();
        match finish(JsonSeed { state: &state }.deserialize(de), &state) {
            Ok(v) => docs.push(v),
            Err(e) => return (docs, Some((i, e))),
        }
    }
    (docs, deep)
}

fn finish(result: Result<Value, serde_yaml_ng::Error>, state: &State) -> Result<Value, YamlError> {
    let found = state.found.borrow_mut().take();
    match (result, found) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(Found::NotFinite { path, value })) => Err(YamlError::NotFinite { path, value }),
        (Err(_), Some(Found::TooDeep { path })) => Err(YamlError::TooDeep { at: format!("at {path}") }),
        (Err(e), None) => Err(YamlError::Syntax(e)),
    }
}

// ---------------------------------------------------------------------------------------
// The depth walk

/// A libyaml parser over a borrowed text, freed on drop. Boxed: libyaml keeps pointers into
/// its own buffers, so it must not move once initialised.
struct EventParser<'a> {
    sys: Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>,
    _input: std::marker::PhantomData<&'a [u8]>,
}

/// What the walk sees of one event.
enum Event {
    Open { line: u64, column: u64 },
    Close,
    DocumentEnd,
    StreamEnd,
    Other,
}

impl<'a> EventParser<'a> {
    fn new(input: &'a [u8]) -> EventParser<'a> {
        let mut sys = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        // SAFETY: `yaml_parser_initialize` fills the whole struct (it zeroes it first); it
        // fails only when malloc does, which aborts in Rust's allocator anyway. The input
        // outlives the parser (`'a`) and is never written through.
        unsafe {
            let p = sys.as_mut_ptr();
            if unsafe_yaml::yaml_parser_initialize(p).fail {
                std::alloc::handle_alloc_error(std::alloc::Layout::new::<unsafe_yaml::yaml_parser_t>());
            }
            unsafe_yaml::yaml_parser_set_encoding(p, unsafe_yaml::YAML_UTF8_ENCODING);
            unsafe_yaml::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
        }
        EventParser { sys, _input: std::marker::PhantomData }
    }

    /// The next event; `None` on a syntax error (left for the real parse to report).
    fn next(&mut self) -> Option<Event> {
        let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        // SAFETY: the parser was initialised in `new`; `yaml_parser_parse` zeroes the event
        // and fills it when it succeeds, and the event is deleted before it goes out of
        // scope. On failure the event holds nothing to free.
        unsafe {
            if unsafe_yaml::yaml_parser_parse(self.sys.as_mut_ptr(), event.as_mut_ptr()).fail {
                return None;
            }
            let event = event.assume_init_mut();
            let seen = match event.type_ {
                unsafe_yaml::YAML_SEQUENCE_START_EVENT | unsafe_yaml::YAML_MAPPING_START_EVENT => {
                    Event::Open { line: event.start_mark.line + 1, column: event.start_mark.column + 1 }
                }
                unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => Event::Close,
                unsafe_yaml::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
                unsafe_yaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
                _ => Event::Other,
            };
            unsafe_yaml::yaml_event_delete(event);
            Some(seen)
        }
    }
}

impl Drop for EventParser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, deleted once.
        unsafe { unsafe_yaml::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}

/// Fails at the first mapping or list nested deeper than `limit`, having read no further.
/// A syntax error ends the walk quietly: the real parse reports it, with its own message,
/// after reading no more than the walk did.
pub fn check_depth(text: &[u8], limit: usize) -> Result<(), YamlError> {
    walk(text, limit).map_err(|(_, e)| e)
}

/// [`check_depth`], with the 0-based index of the deep document.
fn walk(text: &[u8], limit: usize) -> Result<(), (usize, YamlError)> {
    let mut parser = EventParser::new(text);
    let (mut depth, mut document) = (0usize, 0usize);
    loop {
        match parser.next() {
            None | Some(Event::StreamEnd) => return Ok(()),
            Some(Event::Open { line, column }) => {
                depth += 1;
                if depth > limit {
                    return Err((document, YamlError::TooDeep { at: format!("at line {line}, column {column}") }));
                }
            }
            Some(Event::Close) => depth = depth.saturating_sub(1),
            Some(Event::DocumentEnd) => document += 1,
            Some(Event::Other) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// YAML → serde_json::Value, refusing what JSON cannot hold

/// What stopped the conversion, with where (serde's errors carry only a message).
enum Found {
    NotFinite { path: String, value: &'static str },
    TooDeep { path: String },
}

#[derive(Default)]
struct State {
    /// The keys and indexes down to the value being read.
    path: RefCell<Vec<Segment>>,
    found: RefCell<Option<Found>>,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl State {
    fn path(&self) -> String {
        let mut out = String::new();
        for s in self.path.borrow().iter() {
            match s {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => {
                    use fmt::Write;
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        if out.is_empty() { "<document>".to_owned() } else { out }
    }
}

/// Reads one value as serde_json's own `Value` visitor does, except for non-finite floats.
#[derive(Clone, Copy)]
struct JsonSeed<'s> {
    state: &'s State,
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl JsonSeed<'_> {
    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.state.path.borrow().len() >= MAX_DEPTH {
            // Reached through an alias: the text itself passed the depth walk.
            let path = self.state.path();
            *self.state.found.borrow_mut() = Some(Found::TooDeep { path });
            return Err(E::custom("too deep"));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        serde::Deserialize::deserialize(de::value::I128Deserializer::<E>::new(v)).map(Value::Number)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        serde::Deserialize::deserialize(de::value::U128Deserializer::<E>::new(v)).map(Value::Number)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => {
                let value = if v.is_nan() {
                    ".nan"
                } else if v > 0.0 {
                    ".inf"
                } else {
                    "-.inf"
                };
                let path = self.state.path();
                *self.state.found.borrow_mut() = Some(Found::NotFinite { path, value });
                Err(E::custom(format!("{value} is not a finite number")))
            }
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.state.path.borrow_mut().push(Segment::Index(out.len()));
            let next = seq.next_element_seed(self);
            self.state.path.borrow_mut().pop();
            match next? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.state.path.borrow_mut().push(Segment::Key(key));
            let value = map.next_value_seed(self);
            let Some(Segment::Key(key)) = self.state.path.borrow_mut().pop() else {
                unreachable!("the key pushed above")
            };
            out.insert(key, value?);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_yaml_as_json() {
        let v = from_str("a: 1\nb: [x, 2.5, true, null]\nc: {d: -3}\n").unwrap();
        assert_eq!(v, json!({"a": 1, "b": ["x", 2.5, true, null], "c": {"d": -3}}));
        assert_eq!(from_str("").unwrap(), Value::Null);
    }

    #[test]
    fn infinities_and_nan_are_refused_with_the_field_named() {
        for (text, value) in [("memory: .inf", ".inf"), ("memory: -.inf", "-.inf"), ("memory: .NaN", ".nan")] {
            let text = format!("spec:\n  limits:\n    {text}\n");
            let err = from_str(&text).unwrap_err();
            assert!(
                matches!(&err, YamlError::NotFinite { path, value: v } if path == "spec.limits.memory" && *v == value),
                "{text}: {err}"
            );
        }
        let err = from_str("items: [1, [2, .inf]]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "items[1][1]: .inf is not a number a2a accepts (infinity and NaN have no JSON form)"
        );
        // As text they are only strings.
        assert_eq!(from_str("a: '.inf'").unwrap(), json!({"a": ".inf"}));
    }

    #[test]
    fn deep_documents_are_refused_before_they_are_parsed() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        let err = from_str(&deep).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("nests deeper than {MAX_DEPTH} levels (at line 1, column {})", MAX_DEPTH + 1)
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(from_str(&ok).is_ok());
        let block: String = (0..=MAX_DEPTH).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        assert!(matches!(from_str(&block), Err(YamlError::TooDeep { .. })));
        // Depth reached through an alias.
        let half = MAX_DEPTH / 2 + 1;
        let aliased =
            format!("a: &x {}{}\nb: {}*x{}", "[".repeat(half), "]".repeat(half), "[".repeat(half), "]".repeat(half));
        let err = from_str(&aliased).unwrap_err();
        assert!(matches!(&err, YamlError::TooDeep { at } if at.starts_with("at b[0]")), "{err}");
    }

    #[test]
    fn the_deep_document_of_a_stream_is_named() {
        let text = format!("a: 1\n---\nb: 2\n---\n{}\n", "[".repeat(MAX_DEPTH + 5));
        let (docs, err) = documents(&text);
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
        assert!(matches!(err, Some((2, YamlError::TooDeep { .. }))));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(from_str("\u{feff}a: 1").unwrap(), json!({"a": 1}));
        assert_eq!(from_slice(b"\xef\xbb\xbfa: 1").unwrap(), json!({"a": 1}));
    }
}
