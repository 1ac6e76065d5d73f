//! Server-sent events as A2A streams them (`SendStreamingMessage`, `SubscribeToTask`):
//! the byte stream split into events, whatever binding carries them, and an HTTP body turned
//! into a stream of A2A events by the binding's own reading of one event.

use std::collections::VecDeque;

use http_body_util::BodyExt;

use super::client::{Error, EventStream, Result};
use super::types::StreamResponse;

/// How a binding reads one event: `(method, url, event)` to an A2A event or the error it
/// carries.
pub(crate) type DecodeEvent = fn(&str, &str, &SseEvent) -> Result<StreamResponse>;

/// The events of an SSE response body, each read by `decode`; the stream ends with the body.
/// Dropping it closes the connection.
pub(crate) fn events(body: hyper::body::Incoming, url: String, method: String, decode: DecodeEvent) -> EventStream {
    let state = Body { body, decoder: SseDecoder::default(), ready: VecDeque::new(), url, method, decode, done: false };
    Box::pin(futures::stream::unfold(state, next_event))
}

/// Whether a response is an event stream (else it is a plain answer, such as an upfront error).
pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}

struct Body {
    body: hyper::body::Incoming,
    decoder: SseDecoder,
    ready: VecDeque<SseEvent>,
    url: String,
    method: String,
    decode: DecodeEvent,
    done: bool,
}

async fn next_event(mut s: Body) -> Option<(Result<StreamResponse>, Body)> {
    loop {
        if let Some(ev) = s.ready.pop_front() {
            let item = (s.decode)(&s.method, &s.url, &ev);
            return Some((item, s));
        }
        if s.done {
            return None;
        }
        match s.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    s.ready.extend(s.decoder.feed(&data));
                }
            }
            Some(Err(e)) => {
                s.done = true;
                let err = Error::Body { url: s.url.clone(), reason: e.to_string() };
                return Some((Err(err), s));
            }
            None => {
                s.done = true;
                s.ready.extend(s.decoder.finish());
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Splits an SSE byte stream into events (W3C rules: `event:`/`data:` fields, comments,
/// a blank line ends an event, `\n`, `\r\n` or `\r` line ends).
///
/// A chunk is cut at its line ends and each line read in place; only a line split across
/// chunks is copied, into a buffer that keeps its capacity, so an event costs its fields and
/// not an allocation per byte of growth.
#[derive(Default)]
pub struct SseDecoder {
    /// The start of a line whose end is in a later chunk.
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
    last_was_cr: bool,
}

impl SseDecoder {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = bytes;
        // The LF of a CR LF whose CR ended the last chunk.
        if self.last_was_cr && !rest.is_empty() {
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
            self.last_was_cr = false;
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, after) = (&rest[..end], &rest[end + 1..]);
            let ev = if self.line.is_empty() {
                self.line_done(&String::from_utf8_lossy(line))
            } else {
                let mut whole = std::mem::take(&mut self.line);
                whole.extend_from_slice(line);
                let ev = self.line_done(&String::from_utf8_lossy(&whole));
                whole.clear();
                self.line = whole;
                ev
            };
            out.extend(ev);
            rest = match (rest[end], after.first()) {
                (b'\r', Some(b'\n')) => &after[1..],
                (b'\r', None) => {
                    self.last_was_cr = true;
                    after
                }
                _ => after,
            };
        }
        self.line.extend_from_slice(rest);
        out
    }

    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&String::from_utf8_lossy(&line));
        }
        self.line_done("")
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() { "message".into() } else { event },
                data: if data.len() == 1 { data.pop().unwrap_or_default() } else { data.join("\n") },
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_decoder_splits_events_across_chunks_and_line_endings() {
        let mut d = SseDecoder::default();
        let mut got = d.feed(b": keep-alive\r\ndata: {\"a\":");
        assert!(got.is_empty());
        got.extend(d.feed(b"1}\r\n\r\nevent: error\ndata: x\ndata: y\n\ndata: last"));
        got.extend(d.finish());
        assert_eq!(
            got,
            vec![
                SseEvent { event: "message".into(), data: "{\"a\":1}".into() },
                SseEvent { event: "error".into(), data: "x\ny".into() },
                SseEvent { event: "message".into(), data: "last".into() },
            ]
        );
    }

    #[test]
    fn sse_decoder_reads_the_same_events_whatever_the_chunking() {
        let stream = b": hi\r\nevent: status\r\ndata: {\"a\":1}\r\n\r\ndata: x\rdata: y\r\rdata: z\n\n";
        let want = vec![
            SseEvent { event: "status".into(), data: "{\"a\":1}".into() },
            SseEvent { event: "message".into(), data: "x\ny".into() },
            SseEvent { event: "message".into(), data: "z".into() },
        ];
        for size in 1..=stream.len() {
            let mut d = SseDecoder::default();
            let mut got: Vec<SseEvent> = stream.chunks(size).flat_map(|c| d.feed(c)).collect();
            got.extend(d.finish());
            assert_eq!(got, want, "chunks of {size} bytes");
        }
        // A chunk that ends between the CR and the LF of one line end: the LF is no blank line.
        let mut d = SseDecoder::default();
        let mut got = d.feed(b"data: a\r");
        got.extend(d.feed(b"\ndata: b\r\n\r\n"));
        assert_eq!(got, vec![SseEvent { event: "message".into(), data: "a\nb".into() }]);
    }
}
