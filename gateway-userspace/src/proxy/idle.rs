//! A body that must keep moving: when `idle` passes with no frame from the peer, it ends with an
//! error (the client or upstream sees the stream break, not a clean end that would pass for a
//! complete body) and drops the peer's side. A slow-loris upload and an upstream that stops
//! mid-response each free their connection after `timeouts.body_idle`.
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::upstream::{Body, BoxError};
use crate::telemetry::metrics::Metrics;

/// The error an idle body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes for {0:?} (timeouts.body_idle)")]
pub struct BodyIdle(pub Duration);

pub struct Idle {
    inner: Option<Body>,
    idle: Duration,
    /// Made the first time the peer keeps us waiting: a body whose frames are always ready
    /// (most answers) never allocates one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
}

impl Idle {
    pub fn new(inner: Body, idle: Duration, metrics: Arc<Metrics>) -> Self {
        Self { inner: Some(inner), idle, timer: None, metrics }
    }
}

impl http_body::Body for Idle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Idle is Unpin (every field is).
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(r) => {
                if r.is_none() {
                    this.inner = None;
                } else if let Some(t) = this.timer.as_mut() {
                    t.as_mut().reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.inner = None;
                this.metrics.limit_hit("timeouts.body_idle");
                Poll::Ready(Some(Err(Box::new(BodyIdle(idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_quiet_body_ends_in_an_error_and_a_moving_one_does_not() {
        let metrics = Metrics::new();
        // A body that sends one frame and then never another.
        use futures_util::StreamExt as _;
        let frames =
            futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"first")))])
                .chain(futures_util::stream::pending());
        let stalled = BodyExt::boxed(http_body_util::StreamBody::new(frames));
        let mut idle = Idle::new(stalled, Duration::from_millis(100), metrics.clone());
        let first = idle.frame().await.expect("a frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"first"));
        let err = idle.frame().await.expect("an error, not the end").expect_err("must be an error");
        assert!(err.is::<BodyIdle>(), "{err}");
        assert!(metrics.encode().expect("encode").contains("limit=\"timeouts.body_idle\""));

        let whole = http_body_util::Full::new(Bytes::from_static(b"all")).map_err(|n| match n {}).boxed();
        let got = Idle::new(whole, Duration::from_secs(5), metrics).collect().await.expect("no error");
        assert_eq!(got.to_bytes(), Bytes::from_static(b"all"));
    }
}
