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
#[derive(Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
    last_was_cr: bool,
}

impl SseDecoder {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.last_was_cr && b == b'\n' {
                self.last_was_cr = false;
                continue;
            }
            self.last_was_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(ev) = self.line_done(&String::from_utf8_lossy(&line)) {
                    out.push(ev);
                }
            } else {
                self.line.push(b);
            }
        }
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
            let data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() { "message".into() } else { event },
                data: data.join("\n"),
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
}
