//! Admission: how many connections and requests are open, in total and per workload, against
//! `limits.*`. A permit is taken before work starts and given back when it is dropped (for a
//! request: when its response body ends or the client goes away), so nothing queues: past a
//! limit the caller is told at once (`503` + `Retry-After`).
//!
//! The per-workload tables hold only workloads with something open (an entry leaves at zero),
//! so they are bounded by `limits.connections` and `limits.requests`.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use http::{HeaderValue, Response, StatusCode, header};

use super::upstream::Body;
use crate::config::Limits;

/// One kind of thing counted (connections or requests).
#[derive(Default)]
struct Count {
    total: AtomicUsize,
    by_workload: Mutex<HashMap<Arc<str>, usize>>,
}

impl Count {
    /// Takes one if neither limit is reached; which limit refused otherwise.
    fn take(&self, workload: &Arc<str>, total: usize, per: usize) -> Result<(), Scope> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Scope::Total);
        }
        let mut by = self.by_workload.lock().unwrap_or_else(|e| e.into_inner());
        let n = by.entry(workload.clone()).or_insert(0);
        if *n >= per {
            drop(by);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Scope::Workload);
        }
        *n += 1;
        Ok(())
    }

    fn give(&self, workload: &Arc<str>) {
        let mut by = self.by_workload.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by.get_mut(workload) {
            *n -= 1;
            if *n == 0 {
                by.remove(workload);
            }
        }
        drop(by);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn workloads(&self) -> usize {
        self.by_workload.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Total,
    Workload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connection,
    Request,
}

/// The limit that refused: its config field, for the error, the audit record and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

#[derive(Default)]
pub struct Admission {
    connections: Count,
    requests: Count,
}

impl Admission {
    /// A permit for one connection or request of `workload`, or the limit that refuses it.
    pub fn admit(
        self: &Arc<Self>,
        kind: Kind,
        workload: &Arc<str>,
        limits: &Limits,
    ) -> Result<Permit, Refused> {
        let (count, total, per, names) = match kind {
            Kind::Connection => (
                &self.connections,
                limits.connections,
                limits.connections_per_workload,
                ("limits.connections", "limits.connections_per_workload"),
            ),
            Kind::Request => (
                &self.requests,
                limits.requests,
                limits.requests_per_workload,
                ("limits.requests", "limits.requests_per_workload"),
            ),
        };
        match count.take(workload, total, per) {
            Ok(()) => Ok(Permit { admission: self.clone(), kind, workload: workload.clone(), gauge: None }),
            Err(Scope::Total) => Err(Refused(names.0)),
            Err(Scope::Workload) => Err(Refused(names.1)),
        }
    }

    /// Open connections and requests now, and how many workloads hold each (for /readyz detail
    /// and tests).
    pub fn snapshot(&self) -> [usize; 4] {
        [
            self.connections.open(),
            self.connections.workloads(),
            self.requests.open(),
            self.requests.workloads(),
        ]
    }
}

/// Held while a connection or request is open; gives its place back when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    kind: Kind,
    workload: Arc<str>,
    /// `nodegate_requests_in_flight`, counted from admission to the permit's drop.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl Permit {
    /// Counts the permit in `gauge` for as long as it is held.
    pub fn counted_in(mut self, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        self.gauge = Some(gauge);
        self
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
        match self.kind {
            Kind::Connection => self.admission.connections.give(&self.workload),
            Kind::Request => self.admission.requests.give(&self.workload),
        }
    }
}

/// The answer to a request shed by a limit: 503 with `Retry-After` (whole seconds, at least 1)
/// and `connection: close` when the connection itself was over its limit.
pub fn shed_response(refused: Refused, limits: &Limits, close: bool) -> Response<Body> {
    let msg = format!("over {}; retry later", refused.0);
    let mut r = super::http::error_response(StatusCode::SERVICE_UNAVAILABLE, &msg);
    let secs = limits.retry_after.as_secs().max(1);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    if close {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// A response body observed by its request's permit (`observed::Observed`) gives the place
/// back when it ends or is dropped: a stream counts as in flight for as long as it runs.
impl super::observed::Observer for Permit {
    fn data(&mut self, _len: usize) {}
    fn error(&mut self, _e: &super::upstream::BoxError) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> Limits {
        Limits { requests: total, requests_per_workload: per, ..Limits::default() }
    }

    #[test]
    fn refuses_past_each_limit_and_gives_back_on_drop() {
        let a = Arc::new(Admission::default());
        let (x, y): (Arc<str>, Arc<str>) = (Arc::from("x"), Arc::from("y"));
        let l = limits(3, 2);
        let p1 = a.admit(Kind::Request, &x, &l).expect("first");
        let _p2 = a.admit(Kind::Request, &x, &l).expect("second");
        assert_eq!(a.admit(Kind::Request, &x, &l).err(), Some(Refused("limits.requests_per_workload")));
        let _p3 = a.admit(Kind::Request, &y, &l).expect("another workload has room");
        assert_eq!(a.admit(Kind::Request, &y, &l).err(), Some(Refused("limits.requests")));
        drop(p1);
        let _p4 = a.admit(Kind::Request, &y, &l).expect("a dropped permit frees its place");
        assert_eq!(a.snapshot()[2], 3);
        // Connections are counted apart from requests.
        let _c = a.admit(Kind::Connection, &x, &Limits::default()).expect("connection");
        assert_eq!(a.snapshot()[0], 1);
    }

    #[test]
    fn a_counted_permit_is_in_the_gauge_until_dropped() {
        let a = Arc::new(Admission::default());
        let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        let p = a
            .admit(Kind::Request, &Arc::from("x"), &Limits::default())
            .expect("room")
            .counted_in(gauge.clone());
        assert_eq!(gauge.get(), 1);
        drop(p);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_workload_leaves_the_table_when_it_holds_nothing() {
        let a = Arc::new(Admission::default());
        let l = limits(10, 10);
        let permits: Vec<_> =
            (0..5).map(|i| a.admit(Kind::Request, &Arc::from(format!("w{i}")), &l).expect("room")).collect();
        assert_eq!(a.snapshot()[3], 5);
        drop(permits);
        assert_eq!(a.snapshot(), [0, 0, 0, 0]);
    }
}
