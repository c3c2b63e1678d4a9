//! A bridged event stream: each event of the agent's SSE stream, read on the agent's wire and
//! written on the client's, as it arrives (nothing is held beyond the event being read).
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use serde_json::Value;

use super::{
    methods::Method,
    stream::SseReader,
    wire::{self, Wire},
};
use crate::proxy::upstream::Body;

pub struct Translate {
    inner: Body,
    reader: SseReader,
    from: Wire,
    to: Wire,
    method: Method,
    id: Value,
}

impl Translate {
    pub fn new(inner: Body, from: Wire, to: Wire, method: Method, id: Value) -> Self {
        Self { inner, reader: SseReader::default(), from, to, method, id }
    }
}

impl http_body::Body for Translate {
    type Data = Bytes;
    type Error = crate::proxy::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::proxy::upstream::BoxError>>> {
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => f,
                other => return other,
            };
            let Ok(data) = frame.into_data() else { continue };
            let this = &mut *self;
            let mut out = BytesMut::new();
            let (from, to, method, id) = (this.from, this.to, this.method, &this.id);
            this.reader.feed(&data, |event| {
                let answer = wire::read_event(from, method, event);
                out.extend_from_slice(&wire::event_bytes(to, method, id, &answer));
            });
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::a2a::methods::Version;
    use http_body_util::{BodyExt, StreamBody};
    use serde_json::json;

    #[tokio::test]
    async fn rest_events_become_jsonrpc_03_events() {
        let chunks: Vec<Result<Frame<Bytes>, crate::proxy::upstream::BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"data: {\"statusUpdate\": {\"taskId\": \"t\", \"status\": {\"sta"))),
            Ok(Frame::data(Bytes::from_static(b"te\": \"TASK_STATE_COMPLETED\"}}}\n\n"))),
            Ok(Frame::data(Bytes::from_static(
                b"event: error\ndata: {\"error\": {\"code\": 404, \"message\": \"gone\", \"details\": [{\"reason\": \"TASK_NOT_FOUND\"}]}}\n\n",
            ))),
        ];
        let inner = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
        let to = Wire { binding: wire::Binding::JsonRpc, version: Version::V03 };
        let t = Translate::new(inner, Wire::REST, to, Method::SendStreamingMessage, json!(5));
        let out = t.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&out);
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or(Value::Null))
            .collect();
        assert_eq!(events.len(), 2, "{text}");
        assert_eq!(events[0]["result"]["kind"], "status-update");
        assert_eq!(events[0]["result"]["final"], true);
        assert_eq!((events[0]["id"].as_i64(), events[1]["error"]["code"].as_i64()), (Some(5), Some(-32001)));
    }
}
