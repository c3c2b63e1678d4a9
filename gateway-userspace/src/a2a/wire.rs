//! The wires an A2A call can travel on: JSON-RPC (1.0 or 0.3 method names) and the HTTP+JSON
//! (REST) binding of 1.0. A request from any of them is read into one [`Op`] (the method and its
//! 1.0 params), which policy and ownership check, and which can be written out again for an agent
//! on another wire; answers and stream events go the same way back ([`Answer`]). When client and
//! agent share a wire nothing is rewritten: the bytes pass as they came.
use bytes::Bytes;
use http::{Method as HttpMethod, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::{
    convert::{self, Untranslatable},
    methods::{self, Method, Version, code},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    JsonRpc,
    Rest,
}

/// A binding at a protocol version: what one side of a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    pub binding: Binding,
    pub version: Version,
}

impl Wire {
    pub const JSONRPC: Wire = Wire { binding: Binding::JsonRpc, version: Version::V1 };
    pub const JSONRPC_03: Wire = Wire { binding: Binding::JsonRpc, version: Version::V03 };
    pub const REST: Wire = Wire { binding: Binding::Rest, version: Version::V1 };

    /// From a card's interface: `protocolBinding`/`transport` and `protocolVersion`.
    pub fn from_card(binding: Option<&str>, version: Option<&str>) -> Option<Wire> {
        let binding = match binding.unwrap_or("JSONRPC").to_ascii_uppercase().as_str() {
            "JSONRPC" => Binding::JsonRpc,
            "HTTP+JSON" | "REST" => Binding::Rest,
            _ => return None,
        };
        let version = match version {
            Some(v) if v.starts_with("0.") => Version::V03,
            _ => Version::V1,
        };
        // nodegate does not speak 0.3's REST binding (its paths and bodies differ from 1.0's).
        (binding == Binding::JsonRpc || version == Version::V1).then_some(Wire { binding, version })
    }

    pub fn describe(self) -> &'static str {
        match (self.binding, self.version) {
            (Binding::JsonRpc, Version::V1) => "JSON-RPC (A2A 1.0)",
            (Binding::JsonRpc, Version::V03) => "JSON-RPC (A2A 0.3)",
            (Binding::Rest, Version::V1) => "HTTP+JSON (A2A 1.0)",
            (Binding::Rest, Version::V03) => "HTTP+JSON (A2A 0.3)",
        }
    }
}

/// One call, whatever wire it came on: the method, its params in 1.0 shape, and the JSON-RPC
/// id to answer with (null for REST).
#[derive(Debug, Clone)]
pub struct Op {
    pub method: Method,
    pub params: Value,
    pub id: Value,
}

/// An error as JSON-RPC states it (REST errors are mapped onto the same codes).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: i64,
    pub message: String,
}

impl Failure {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<Untranslatable> for Failure {
    fn from(u: Untranslatable) -> Self {
        Failure::new(code::UNSUPPORTED, format!("nodegate cannot bridge this call: {u}"))
    }
}

/// An answer in 1.0 shape.
#[derive(Debug, Clone)]
pub enum Answer {
    Result(Value),
    Error(Failure),
}

/// JSON-RPC code, REST reason, HTTP status and gRPC status name, as the 1.0 spec pairs them.
const ERRORS: &[(i64, &str, u16, &str)] = &[
    (code::TASK_NOT_FOUND, "TASK_NOT_FOUND", 404, "NOT_FOUND"),
    (-32002, "TASK_NOT_CANCELABLE", 400, "FAILED_PRECONDITION"),
    (code::PUSH_NOT_SUPPORTED, "PUSH_NOTIFICATION_NOT_SUPPORTED", 400, "FAILED_PRECONDITION"),
    (code::UNSUPPORTED, "UNSUPPORTED_OPERATION", 400, "FAILED_PRECONDITION"),
    (-32005, "CONTENT_TYPE_NOT_SUPPORTED", 400, "INVALID_ARGUMENT"),
    (-32006, "INVALID_AGENT_RESPONSE", 500, "INTERNAL"),
    (-32007, "EXTENDED_AGENT_CARD_NOT_CONFIGURED", 400, "FAILED_PRECONDITION"),
    (-32008, "EXTENSION_SUPPORT_REQUIRED", 400, "FAILED_PRECONDITION"),
    (-32009, "VERSION_NOT_SUPPORTED", 400, "FAILED_PRECONDITION"),
    (code::INVALID_PARAMS, "INVALID_PARAMS", 400, "INVALID_ARGUMENT"),
    (code::INVALID_REQUEST, "INVALID_REQUEST", 400, "INVALID_ARGUMENT"),
    (code::PARSE, "INVALID_REQUEST", 400, "INVALID_ARGUMENT"),
    (code::METHOD_NOT_FOUND, "METHOD_NOT_FOUND", 404, "NOT_FOUND"),
    (code::INTERNAL, "INTERNAL_ERROR", 500, "INTERNAL"),
    (code::FORBIDDEN, "NODEGATE_POLICY_DENIED", 403, "PERMISSION_DENIED"),
    (code::UPSTREAM, "NODEGATE_AGENT_UNAVAILABLE", 502, "UNAVAILABLE"),
    (code::TOO_LARGE, "NODEGATE_REQUEST_TOO_LARGE", 413, "RESOURCE_EXHAUSTED"),
    (code::RATE_LIMITED, "NODEGATE_RATE_LIMITED", 429, "RESOURCE_EXHAUSTED"),
];

fn error_row(code: i64) -> (&'static str, u16, &'static str) {
    ERRORS
        .iter()
        .find(|(c, ..)| *c == code)
        .map_or(("INTERNAL_ERROR", 500, "INTERNAL"), |(_, r, h, g)| (*r, *h, *g))
}

/// The HTTP status a REST client gets for `code`.
pub fn rest_status(code: i64) -> StatusCode {
    StatusCode::from_u16(error_row(code).1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The REST error body for `f` (google.rpc.Status with an ErrorInfo naming the A2A reason).
pub fn rest_error(f: &Failure) -> Value {
    let (reason, http, status) = error_row(f.code);
    json!({"error": {"code": http, "status": status, "message": f.message, "details": [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
        "domain": "a2a-protocol.org", "metadata": {}}]}})
}

fn failure_from_rest(status: StatusCode, body: &Value) -> Failure {
    let e = body.get("error").unwrap_or(&Value::Null);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("the agent answered {status}"), str::to_string);
    let reason = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|d| d.get("reason").and_then(Value::as_str));
    let code = match reason.and_then(|r| ERRORS.iter().find(|(_, rr, ..)| *rr == r)) {
        Some((c, ..)) => *c,
        None if status == StatusCode::NOT_FOUND => code::METHOD_NOT_FOUND,
        None if status.is_client_error() => code::INVALID_REQUEST,
        None => code::INTERNAL,
    };
    Failure::new(code, message)
}

/// Reads a JSON-RPC request (either generation's method names); params come out in 1.0 shape.
pub fn read_jsonrpc(body: &[u8]) -> Result<(Op, Version), (Value, Failure)> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| (Value::Null, Failure::new(code::PARSE, format!("Parse error: {e}"))))?;
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let Some((method, version)) =
        v.get("method").and_then(Value::as_str).and_then(methods::parse).filter(|_| v.is_object())
    else {
        let f = match (&v, v.get("method").and_then(Value::as_str)) {
            (Value::Array(_), _) => Failure::new(code::INVALID_REQUEST, "JSON-RPC batches are not supported"),
            (_, Some(m)) => Failure::new(code::METHOD_NOT_FOUND, format!("Method not found: {m}")),
            (_, None) => Failure::new(code::INVALID_REQUEST, "Invalid Request: no method"),
        };
        return Err((id, f));
    };
    let params = v.get("params").cloned().unwrap_or_else(|| json!({}));
    let params = match version {
        Version::V1 => params,
        Version::V03 => convert::params_to_v1(method, &params)
            .map_err(|u| (id.clone(), Failure::new(code::INVALID_PARAMS, format!("Invalid params: {u}"))))?,
    };
    Ok((Op { method, params, id }, version))
}

const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn query(q: Option<&str>, ints: &[&str], bools: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        let value = if ints.contains(&k.as_ref()) {
            v.parse::<i64>().map_or(Value::String(v.to_string()), Value::from)
        } else if bools.contains(&k.as_ref()) {
            Value::Bool(v == "true")
        } else {
            Value::String(v.to_string())
        };
        m.insert(k.into_owned(), value);
    }
    m
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Failure::new(code::INVALID_REQUEST, "the request body is not a JSON object")),
        Err(e) => Err(Failure::new(code::PARSE, format!("the request body is not JSON: {e}"))),
    }
}

/// Reads a request of the 1.0 HTTP+JSON binding: `path` is below the interface's URL.
pub fn read_rest(method: &HttpMethod, path: &str, q: Option<&str>, body: &[u8]) -> Result<Op, Failure> {
    const TOP: [&str; 4] = ["message:send", "message:stream", "tasks", "extendedAgentCard"];
    let mut segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let mut tenant = None;
    if segs.len() > 1 && !TOP.contains(&segs[0]) {
        tenant = Some(decode(segs.remove(0)));
    }
    let not_found = || Failure::new(code::METHOD_NOT_FOUND, format!("no A2A operation at {method} {path}"));
    let (m, mut params) = match (method.as_str(), segs.as_slice()) {
        ("POST", ["message:send"]) => (Method::SendMessage, body_object(body)?),
        ("POST", ["message:stream"]) => (Method::SendStreamingMessage, body_object(body)?),
        ("GET", ["tasks"]) => {
            (Method::ListTasks, query(q, &["pageSize", "historyLength", "status"], &["includeArtifacts"]))
        }
        ("GET", ["extendedAgentCard"]) => (Method::GetExtendedAgentCard, Map::new()),
        ("GET", ["tasks", id]) => {
            let mut p = query(q, &["historyLength"], &[]);
            p.insert("id".into(), decode(id).into());
            (Method::GetTask, p)
        }
        (verb, ["tasks", action]) => {
            let (id, what) = action.rsplit_once(':').ok_or_else(not_found)?;
            let m = match (verb, what) {
                ("POST", "cancel") => Method::CancelTask,
                ("GET" | "POST", "subscribe") => Method::SubscribeToTask,
                _ => return Err(not_found()),
            };
            let mut p = if verb == "POST" { body_object(body)? } else { Map::new() };
            p.insert("id".into(), decode(id).into());
            (m, p)
        }
        (verb, ["tasks", id, "pushNotificationConfigs"]) => {
            let (m, mut p) = match verb {
                "POST" => (Method::CreatePushConfig, body_object(body)?),
                "GET" => (Method::ListPushConfigs, query(q, &["pageSize"], &[])),
                _ => return Err(not_found()),
            };
            p.insert("taskId".into(), decode(id).into());
            (m, p)
        }
        (verb, ["tasks", id, "pushNotificationConfigs", cfg]) => {
            let m = match verb {
                "GET" => Method::GetPushConfig,
                "DELETE" => Method::DeletePushConfig,
                _ => return Err(not_found()),
            };
            let mut p = Map::new();
            p.insert("taskId".into(), decode(id).into());
            p.insert("id".into(), decode(cfg).into());
            (m, p)
        }
        _ => return Err(not_found()),
    };
    if let Some(t) = tenant {
        params.insert("tenant".into(), t.into());
    }
    Ok(Op { method: m, params: Value::Object(params), id: Value::Null })
}

/// A request as it goes to the agent: verb, path and query below the interface URL, body.
#[derive(Debug)]
pub struct Outgoing {
    pub method: HttpMethod,
    pub path: String,
    pub body: Option<Bytes>,
}

fn s<'a>(p: &'a Value, k: &str) -> &'a str {
    p.get(k).and_then(Value::as_str).unwrap_or("")
}

fn enc(x: &str) -> String {
    utf8_percent_encode(x, SEGMENT).to_string()
}

/// Writes `op` for an agent speaking `wire`.
pub fn write(wire: Wire, op: &Op) -> Result<Outgoing, Untranslatable> {
    let p = &op.params;
    match wire.binding {
        Binding::JsonRpc => {
            let (name, params) = match wire.version {
                Version::V1 => (op.method.name(), p.clone()),
                Version::V03 => (op.method.v03_name(), convert::params_to_v03(op.method, p)?),
            };
            let body = json!({"jsonrpc": "2.0", "id": op.id, "method": name, "params": params});
            Ok(Outgoing {
                method: HttpMethod::POST,
                path: String::new(),
                body: Some(Bytes::from(body.to_string())),
            })
        }
        Binding::Rest => {
            let tenant = match s(p, "tenant") {
                "" => String::new(),
                t => format!("/{}", enc(t)),
            };
            let without = |keys: &[&str]| {
                let mut o = p.as_object().cloned().unwrap_or_default();
                o.remove("tenant");
                for k in keys {
                    o.remove(*k);
                }
                Some(Bytes::from(Value::Object(o).to_string()))
            };
            let qs = |keys: &[&str]| {
                let mut ser = form_urlencoded::Serializer::new(String::new());
                for k in keys {
                    match p.get(*k) {
                        Some(Value::String(v)) => ser.append_pair(k, v),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => ser.append_pair(k, &v.to_string()),
                        _ => &mut ser,
                    };
                }
                let q = ser.finish();
                if q.is_empty() { q } else { format!("?{q}") }
            };
            let id = enc(s(p, "id"));
            let task = enc(s(p, "taskId"));
            let (verb, path, body) = match op.method {
                Method::SendMessage => (HttpMethod::POST, "/message:send".to_string(), without(&[])),
                Method::SendStreamingMessage => (HttpMethod::POST, "/message:stream".into(), without(&[])),
                Method::GetTask => (HttpMethod::GET, format!("/tasks/{id}{}", qs(&["historyLength"])), None),
                Method::ListTasks => {
                    let keys = [
                        "contextId",
                        "status",
                        "pageSize",
                        "pageToken",
                        "historyLength",
                        "statusTimestampAfter",
                        "includeArtifacts",
                    ];
                    (HttpMethod::GET, format!("/tasks{}", qs(&keys)), None)
                }
                Method::CancelTask => (HttpMethod::POST, format!("/tasks/{id}:cancel"), without(&["id"])),
                Method::SubscribeToTask => (HttpMethod::GET, format!("/tasks/{id}:subscribe"), None),
                Method::CreatePushConfig => {
                    (HttpMethod::POST, format!("/tasks/{task}/pushNotificationConfigs"), without(&["taskId"]))
                }
                Method::ListPushConfigs => (
                    HttpMethod::GET,
                    format!("/tasks/{task}/pushNotificationConfigs{}", qs(&["pageSize", "pageToken"])),
                    None,
                ),
                Method::GetPushConfig => {
                    (HttpMethod::GET, format!("/tasks/{task}/pushNotificationConfigs/{id}"), None)
                }
                Method::DeletePushConfig => {
                    (HttpMethod::DELETE, format!("/tasks/{task}/pushNotificationConfigs/{id}"), None)
                }
                Method::GetExtendedAgentCard => (HttpMethod::GET, "/extendedAgentCard".into(), None),
            };
            Ok(Outgoing { method: verb, path: format!("{tenant}{path}"), body })
        }
    }
}

/// Reads an agent's whole (not streamed) answer for `method`, sent on `wire`.
pub fn read_answer(wire: Wire, method: Method, status: StatusCode, body: &[u8]) -> Answer {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if empty && status.is_success() => json!({}),
        Err(e) => {
            let why =
                if empty { "an empty body".to_string() } else { format!("a body that is not JSON ({e})") };
            return Answer::Error(Failure::new(
                code::UPSTREAM,
                format!("the agent answered {status} with {why}"),
            ));
        }
    };
    match wire.binding {
        Binding::JsonRpc => read_envelope(wire.version, method, &v),
        Binding::Rest if status.is_success() => Answer::Result(v),
        Binding::Rest => Answer::Error(failure_from_rest(status, &v)),
    }
}

fn read_envelope(version: Version, method: Method, v: &Value) -> Answer {
    if let Some(e) = v.get("error") {
        return Answer::Error(Failure::new(
            e.get("code").and_then(Value::as_i64).unwrap_or(code::INTERNAL),
            e.get("message").and_then(Value::as_str).unwrap_or(""),
        ));
    }
    let r = v.get("result").cloned().unwrap_or(Value::Null);
    match version {
        Version::V1 => Answer::Result(r),
        Version::V03 => match convert::result_to_v1(method, &r) {
            Ok(r) => Answer::Result(r),
            Err(u) => {
                Answer::Error(Failure::new(code::UPSTREAM, format!("nodegate cannot bridge the answer: {u}")))
            }
        },
    }
}

/// Reads one event of an agent's stream (its `data:` payload).
pub fn read_event(wire: Wire, method: Method, data: &[u8]) -> Answer {
    match serde_json::from_slice::<Value>(data) {
        Err(e) => Answer::Error(Failure::new(
            code::UPSTREAM,
            format!("the agent sent an event that is not JSON: {e}"),
        )),
        Ok(v) => match wire.binding {
            Binding::JsonRpc => read_envelope(wire.version, method, &v),
            Binding::Rest if v.get("error").is_some() => Answer::Error(failure_from_rest(StatusCode::OK, &v)),
            Binding::Rest => Answer::Result(v),
        },
    }
}

/// An answer as a client on `wire` expects it: HTTP status and body.
pub fn answer_body(wire: Wire, method: Option<Method>, id: &Value, a: &Answer) -> (StatusCode, Value) {
    let a = match (wire.version, a, method) {
        (Version::V03, Answer::Result(r), Some(m)) => match convert::result_to_v03(m, r) {
            Ok(r) => Answer::Result(r),
            Err(u) => {
                Answer::Error(Failure::new(code::UPSTREAM, format!("nodegate cannot bridge the answer: {u}")))
            }
        },
        _ => a.clone(),
    };
    match (wire.binding, a) {
        (Binding::JsonRpc, Answer::Result(r)) => {
            (StatusCode::OK, json!({"jsonrpc": "2.0", "id": id, "result": r}))
        }
        (Binding::JsonRpc, Answer::Error(f)) => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": f.code, "message": f.message}}),
        ),
        (Binding::Rest, Answer::Result(r)) => (StatusCode::OK, r),
        (Binding::Rest, Answer::Error(f)) => (rest_status(f.code), rest_error(&f)),
    }
}

/// One stream event for a client on `wire` (`data:` line and blank line included).
pub fn event_bytes(wire: Wire, method: Method, id: &Value, a: &Answer) -> Bytes {
    let (_, body) = answer_body(wire, Some(method), id, a);
    let kind =
        if wire.binding == Binding::Rest && matches!(a, Answer::Error(_)) { "event: error\n" } else { "" };
    Bytes::from(format!("{kind}data: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_requests_read_as_the_jsonrpc_method() {
        let op = read_rest(&HttpMethod::GET, "/tasks/t%2F1", Some("historyLength=3"), b"").unwrap();
        assert_eq!(
            (op.method, op.params.clone()),
            (Method::GetTask, json!({"id": "t/1", "historyLength": 3}))
        );
        let op = read_rest(&HttpMethod::POST, "/acme/tasks/t1:cancel", None, b"").unwrap();
        assert_eq!(
            (op.method, op.params.clone()),
            (Method::CancelTask, json!({"id": "t1", "tenant": "acme"}))
        );
        let op =
            read_rest(&HttpMethod::POST, "/tasks/t1/pushNotificationConfigs", None, br#"{"url":"http://x"}"#)
                .unwrap();
        assert_eq!(op.params, json!({"taskId": "t1", "url": "http://x"}));
        let op = read_rest(&HttpMethod::DELETE, "/tasks/t1/pushNotificationConfigs/c1", None, b"").unwrap();
        assert_eq!(
            (op.method, op.params.clone()),
            (Method::DeletePushConfig, json!({"taskId": "t1", "id": "c1"}))
        );
        assert_eq!(
            read_rest(&HttpMethod::PUT, "/tasks/t1", None, b"").unwrap_err().code,
            code::METHOD_NOT_FOUND
        );
        assert_eq!(
            read_rest(&HttpMethod::POST, "/message:send", None, b"[1]").unwrap_err().code,
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn a_jsonrpc_call_written_as_rest_and_back() {
        let (op, v) = read_jsonrpc(
            br#"{"jsonrpc":"2.0","id":7,"method":"GetTask","params":{"id":"a b","historyLength":2}}"#,
        )
        .unwrap();
        assert_eq!(v, Version::V1);
        let out = write(Wire::REST, &op).unwrap();
        assert_eq!((out.method, out.path.as_str()), (HttpMethod::GET, "/tasks/a%20b?historyLength=2"));
        let back = read_rest(&HttpMethod::GET, "/tasks/a%20b", Some("historyLength=2"), b"").unwrap();
        assert_eq!(back.params, op.params);
        let old = write(Wire::JSONRPC_03, &op).unwrap();
        let sent: Value = serde_json::from_slice(&old.body.unwrap()).unwrap();
        assert_eq!((sent["method"].as_str(), sent["id"].as_i64()), (Some("tasks/get"), Some(7)));
    }

    #[test]
    fn errors_keep_their_meaning_across_bindings() {
        let body = rest_error(&Failure::new(code::TASK_NOT_FOUND, "Task not found"));
        assert_eq!(body["error"]["code"], 404);
        let back =
            read_answer(Wire::REST, Method::GetTask, StatusCode::NOT_FOUND, body.to_string().as_bytes());
        assert!(
            matches!(back, Answer::Error(f) if f.code == code::TASK_NOT_FOUND && f.message == "Task not found")
        );
        let a = Answer::Error(Failure::new(code::FORBIDDEN, "denied by a2a.allow[0]"));
        let (st, v) = answer_body(Wire::REST, Some(Method::SendMessage), &Value::Null, &a);
        assert_eq!((st, v["error"]["status"].as_str()), (StatusCode::FORBIDDEN, Some("PERMISSION_DENIED")));
        let ev = event_bytes(Wire::REST, Method::SendStreamingMessage, &Value::Null, &a);
        assert!(ev.starts_with(b"event: error\ndata: {"), "{ev:?}");
    }

    #[test]
    fn a_03_answer_reaches_a_10_client_in_10_shape() {
        let old = json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "task", "id": "t", "contextId": "c",
            "status": {"state": "working"}}});
        let a =
            read_answer(Wire::JSONRPC_03, Method::SendMessage, StatusCode::OK, old.to_string().as_bytes());
        let (_, v) = answer_body(Wire::JSONRPC, Some(Method::SendMessage), &json!(1), &a);
        assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_WORKING");
        let (_, back) = answer_body(Wire::JSONRPC_03, Some(Method::SendMessage), &json!(1), &a);
        assert_eq!(back, old);
    }
}
