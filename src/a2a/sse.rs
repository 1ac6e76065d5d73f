//! Server-sent events as A2A streams them (`SendStreamingMessage`, `SubscribeToTask`):
//! the byte stream split into events, whatever binding carries them.

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
