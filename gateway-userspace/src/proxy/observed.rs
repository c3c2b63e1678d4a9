//! A response body passed through untouched while an observer sees it go: each data frame's
//! size, and an error if the stream breaks. The observer is dropped when the body ends or the
//! client goes away, so its `Drop` is where a request's record is written.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Frame;

use super::upstream::Body;

pub trait Observer: Send + Unpin + 'static {
    fn data(&mut self, len: usize);
    /// Each data frame as it passes (by default only its size is seen).
    fn frame(&mut self, d: &Bytes) {
        self.data(d.len());
    }
    fn error(&mut self, e: &crate::proxy::upstream::BoxError);
    /// The body's trailers, if it ends with some (gRPC's `grpc-status`).
    fn trailers(&mut self, _t: &http::HeaderMap) {}
}

pub struct Observed<O: Observer> {
    inner: Body,
    observer: Option<O>,
}

impl<O: Observer> Observed<O> {
    pub fn new(inner: Body, observer: O) -> Self {
        Self { inner, observer: Some(observer) }
    }
}

impl<O: Observer> http_body::Body for Observed<O> {
    type Data = Bytes;
    type Error = crate::proxy::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::proxy::upstream::BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(o)) = (f.data_ref(), self.observer.as_mut()) {
                    o.frame(d);
                } else if let (Some(t), Some(o)) = (f.trailers_ref(), self.observer.as_mut()) {
                    o.trailers(t);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(o) = self.observer.as_mut() {
                    o.error(e);
                }
                self.observer = None;
            }
            Poll::Ready(None) => self.observer = None,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
