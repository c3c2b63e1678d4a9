//! A2A objects between the two spec generations: 0.3 (`kind` discriminators, kebab-case task
//! states, `user`/`agent` roles, file parts) and 1.0 (oneof wrappers, `TASK_STATE_*`, `ROLE_*`,
//! flat parts). Requests and results of every method both generations share, field by field as
//! the specs define them; anything with no counterpart is refused by name ([`Untranslatable`]),
//! never dropped quietly.
use serde_json::{Map, Value, json};

use super::methods::Method;

/// A request or answer that has no counterpart in the other generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

impl std::fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Out = Result<Value, Untranslatable>;

const STATES: [(&str, &str); 9] = [
    ("unknown", "TASK_STATE_UNSPECIFIED"),
    ("submitted", "TASK_STATE_SUBMITTED"),
    ("working", "TASK_STATE_WORKING"),
    ("completed", "TASK_STATE_COMPLETED"),
    ("failed", "TASK_STATE_FAILED"),
    ("canceled", "TASK_STATE_CANCELED"),
    ("input-required", "TASK_STATE_INPUT_REQUIRED"),
    ("rejected", "TASK_STATE_REJECTED"),
    ("auth-required", "TASK_STATE_AUTH_REQUIRED"),
];

/// Whether a 1.0 task state ends the task.
pub fn terminal(state_v1: &str) -> bool {
    matches!(
        state_v1,
        "TASK_STATE_COMPLETED" | "TASK_STATE_CANCELED" | "TASK_STATE_FAILED" | "TASK_STATE_REJECTED"
    )
}

fn obj(v: &Value) -> Option<&Map<String, Value>> {
    v.as_object()
}

/// Copies the fields named in `keys` that `from` has (and are not null).
fn copy(from: &Value, keys: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(o) = obj(from) {
        for k in keys {
            if let Some(v) = o.get(*k).filter(|v| !v.is_null()) {
                m.insert((*k).to_string(), v.clone());
            }
        }
    }
    m
}

fn each(v: Option<&Value>, f: impl Fn(&Value) -> Out) -> Result<Option<Value>, Untranslatable> {
    match v.and_then(Value::as_array) {
        Some(a) => Ok(Some(Value::Array(a.iter().map(f).collect::<Result<_, _>>()?))),
        None => Ok(None),
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v);
    }
}

// ---- 0.3 -> 1.0 ----

fn part_to_v1(p: &Value) -> Out {
    let mut meta = p.get("metadata").and_then(Value::as_object).cloned();
    let mut m = Map::new();
    match p.get("kind").and_then(Value::as_str) {
        Some("text") => put(&mut m, "text", p.get("text").cloned()),
        Some("data") => {
            let compat = meta.as_mut().and_then(|x| x.remove("data_part_compat")).and_then(|v| v.as_bool());
            let data = p.get("data").cloned().unwrap_or(Value::Null);
            let data =
                if compat == Some(true) { data.get("value").cloned().unwrap_or(Value::Null) } else { data };
            m.insert("data".into(), data);
        }
        Some("file") => {
            let f = p.get("file").cloned().unwrap_or(Value::Null);
            if let Some(b) = f.get("bytes") {
                m.insert("raw".into(), b.clone());
            } else if let Some(u) = f.get("uri") {
                m.insert("url".into(), u.clone());
            } else {
                return Err(Untranslatable("a file part with neither bytes nor uri".into()));
            }
            put(&mut m, "mediaType", f.get("mimeType").cloned());
            put(&mut m, "filename", f.get("name").cloned());
        }
        other => return Err(Untranslatable(format!("a message part of kind {other:?}"))),
    }
    if let Some(meta) = meta.filter(|m| !m.is_empty()) {
        m.insert("metadata".into(), Value::Object(meta));
    }
    Ok(Value::Object(m))
}

pub fn message_to_v1(msg: &Value) -> Out {
    let mut m =
        copy(msg, &["messageId", "contextId", "taskId", "referenceTaskIds", "metadata", "extensions"]);
    let role = match msg.get("role").and_then(Value::as_str) {
        Some("user") => "ROLE_USER",
        Some("agent") => "ROLE_AGENT",
        _ => "ROLE_UNSPECIFIED",
    };
    m.insert("role".into(), role.into());
    put(&mut m, "parts", each(msg.get("parts"), part_to_v1)?);
    Ok(Value::Object(m))
}

fn status_to_v1(s: &Value) -> Out {
    let mut m = copy(s, &["timestamp"]);
    let state = s.get("state").and_then(Value::as_str).unwrap_or("unknown");
    let v1 = STATES.iter().find(|(o, _)| *o == state).map_or("TASK_STATE_UNSPECIFIED", |(_, n)| n);
    m.insert("state".into(), v1.into());
    if let Some(msg) = s.get("message").filter(|v| !v.is_null()) {
        m.insert("message".into(), message_to_v1(msg)?);
    }
    Ok(Value::Object(m))
}

fn artifact_to_v1(a: &Value) -> Out {
    let mut m = copy(a, &["artifactId", "name", "description", "metadata", "extensions"]);
    put(&mut m, "parts", each(a.get("parts"), part_to_v1)?);
    Ok(Value::Object(m))
}

pub fn task_to_v1(t: &Value) -> Out {
    let mut m = copy(t, &["id", "contextId", "metadata"]);
    if let Some(s) = t.get("status") {
        m.insert("status".into(), status_to_v1(s)?);
    }
    put(&mut m, "artifacts", each(t.get("artifacts"), artifact_to_v1)?);
    put(&mut m, "history", each(t.get("history"), message_to_v1)?);
    Ok(Value::Object(m))
}

/// A 0.3 result object (`kind` task, message, status-update or artifact-update) as a 1.0
/// `StreamResponse`/`SendMessageResponse` wrapper.
pub fn event_to_v1(r: &Value) -> Out {
    let (key, inner) = match r.get("kind").and_then(Value::as_str) {
        Some("task") => ("task", task_to_v1(r)?),
        Some("message") => ("message", message_to_v1(r)?),
        Some("status-update") => {
            let mut m = copy(r, &["taskId", "contextId", "metadata"]);
            if let Some(s) = r.get("status") {
                m.insert("status".into(), status_to_v1(s)?);
            }
            ("statusUpdate", Value::Object(m))
        }
        Some("artifact-update") => {
            let mut m = copy(r, &["taskId", "contextId", "append", "lastChunk", "metadata"]);
            if let Some(a) = r.get("artifact") {
                m.insert("artifact".into(), artifact_to_v1(a)?);
            }
            ("artifactUpdate", Value::Object(m))
        }
        other => return Err(Untranslatable(format!("an A2A 0.3 result of kind {other:?}"))),
    };
    Ok(json!({ key: inner }))
}

fn auth_to_v1(a: &Value) -> Value {
    let mut m = copy(a, &["credentials"]);
    if let Some(s) = a.pointer("/schemes/0") {
        m.insert("scheme".into(), s.clone());
    }
    Value::Object(m)
}

fn push_to_v1(task_id: Option<&Value>, cfg: &Value) -> Value {
    let mut m = copy(cfg, &["id", "url", "token"]);
    if let Some(t) = task_id.filter(|t| !t.is_null()) {
        m.insert("taskId".into(), t.clone());
    }
    if let Some(a) = cfg.get("authentication").filter(|v| !v.is_null()) {
        m.insert("authentication".into(), auth_to_v1(a));
    }
    Value::Object(m)
}

/// A 0.3 request's params as the 1.0 request of the same method.
pub fn params_to_v1(method: Method, p: &Value) -> Out {
    use Method::*;
    Ok(match method {
        SendMessage | SendStreamingMessage => {
            let mut m = copy(p, &["metadata"]);
            if let Some(msg) = p.get("message") {
                m.insert("message".into(), message_to_v1(msg)?);
            }
            if let Some(c) = p.get("configuration").filter(|v| !v.is_null()) {
                let mut cfg = copy(c, &["acceptedOutputModes"]);
                if let Some(h) = c.get("historyLength").and_then(Value::as_i64).filter(|h| *h != 0) {
                    cfg.insert("historyLength".into(), h.into());
                }
                if let Some(b) = c.get("blocking").and_then(Value::as_bool) {
                    cfg.insert("returnImmediately".into(), (!b).into());
                }
                if let Some(push) = c.get("pushNotificationConfig").filter(|v| !v.is_null()) {
                    cfg.insert("taskPushNotificationConfig".into(), push_to_v1(None, push));
                }
                m.insert("configuration".into(), Value::Object(cfg));
            }
            Value::Object(m)
        }
        GetTask | CancelTask | SubscribeToTask => {
            Value::Object(copy(p, &["id", "historyLength", "metadata"]))
        }
        CreatePushConfig => {
            push_to_v1(p.get("taskId"), p.get("pushNotificationConfig").unwrap_or(&Value::Null))
        }
        GetPushConfig | DeletePushConfig => {
            let mut m = Map::new();
            put(&mut m, "taskId", p.get("id").cloned());
            put(&mut m, "id", p.get("pushNotificationConfigId").cloned());
            Value::Object(m)
        }
        ListPushConfigs => {
            let mut m = Map::new();
            put(&mut m, "taskId", p.get("id").cloned());
            Value::Object(m)
        }
        GetExtendedAgentCard => json!({}),
        ListTasks => return Err(Untranslatable("A2A 0.3 has no ListTasks".into())),
    })
}

/// A 0.3 agent's result for `method` as the 1.0 result.
pub fn result_to_v1(method: Method, r: &Value) -> Out {
    use Method::*;
    match method {
        SendMessage | SendStreamingMessage | SubscribeToTask => event_to_v1(r),
        GetTask | CancelTask => task_to_v1(r),
        CreatePushConfig | GetPushConfig => {
            Ok(push_to_v1(r.get("taskId"), r.get("pushNotificationConfig").unwrap_or(&Value::Null)))
        }
        ListPushConfigs => {
            let configs = each(Some(r), |c| {
                Ok(push_to_v1(c.get("taskId"), c.get("pushNotificationConfig").unwrap_or(&Value::Null)))
            })?;
            Ok(json!({"configs": configs.unwrap_or_else(|| json!([]))}))
        }
        DeletePushConfig => Ok(json!({})),
        GetExtendedAgentCard | ListTasks => {
            Err(Untranslatable(format!("{} is not bridged between A2A 0.3 and 1.0", method.name())))
        }
    }
}

// ---- 1.0 -> 0.3 ----

fn part_to_v03(p: &Value) -> Out {
    let mut meta = p.get("metadata").and_then(Value::as_object).cloned();
    let mut m = Map::new();
    if let Some(t) = p.get("text") {
        m.insert("kind".into(), "text".into());
        m.insert("text".into(), t.clone());
    } else if let Some(d) = p.get("data") {
        m.insert("kind".into(), "data".into());
        if d.is_object() {
            m.insert("data".into(), d.clone());
        } else {
            m.insert("data".into(), json!({"value": d}));
            meta.get_or_insert_with(Map::new).insert("data_part_compat".into(), true.into());
        }
    } else if p.get("raw").is_some() || p.get("url").is_some() {
        m.insert("kind".into(), "file".into());
        let mut f = Map::new();
        match p.get("raw") {
            Some(b) => f.insert("bytes".into(), b.clone()),
            None => f.insert("uri".into(), p.get("url").cloned().unwrap_or(Value::Null)),
        };
        put(&mut f, "mimeType", p.get("mediaType").cloned());
        put(&mut f, "name", p.get("filename").cloned());
        m.insert("file".into(), Value::Object(f));
    } else {
        return Err(Untranslatable("a message part with no text, data, raw or url".into()));
    }
    if let Some(meta) = meta.filter(|m| !m.is_empty()) {
        m.insert("metadata".into(), Value::Object(meta));
    }
    Ok(Value::Object(m))
}

pub fn message_to_v03(msg: &Value) -> Out {
    let mut m = copy(msg, &["messageId", "referenceTaskIds", "metadata", "extensions"]);
    for k in ["contextId", "taskId"] {
        if let Some(v) = msg.get(k).filter(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
            m.insert(k.into(), v.clone());
        }
    }
    m.insert("kind".into(), "message".into());
    let role = if msg.get("role").and_then(Value::as_str) == Some("ROLE_USER") { "user" } else { "agent" };
    m.insert("role".into(), role.into());
    m.insert("parts".into(), each(msg.get("parts"), part_to_v03)?.unwrap_or_else(|| json!([])));
    Ok(Value::Object(m))
}

fn status_to_v03(s: &Value) -> Out {
    let mut m = copy(s, &["timestamp"]);
    let state = s.get("state").and_then(Value::as_str).unwrap_or("TASK_STATE_UNSPECIFIED");
    let old = STATES.iter().find(|(_, n)| *n == state).map_or("unknown", |(o, _)| o);
    m.insert("state".into(), old.into());
    if let Some(msg) = s.get("message").filter(|v| !v.is_null()) {
        m.insert("message".into(), message_to_v03(msg)?);
    }
    Ok(Value::Object(m))
}

fn artifact_to_v03(a: &Value) -> Out {
    let mut m = copy(a, &["artifactId", "name", "description", "metadata", "extensions"]);
    m.insert("parts".into(), each(a.get("parts"), part_to_v03)?.unwrap_or_else(|| json!([])));
    Ok(Value::Object(m))
}

pub fn task_to_v03(t: &Value) -> Out {
    let mut m = copy(t, &["id", "contextId", "metadata"]);
    m.insert("kind".into(), "task".into());
    let status = t.get("status").map_or_else(|| Ok(json!({"state": "unknown"})), status_to_v03)?;
    m.insert("status".into(), status);
    put(&mut m, "artifacts", each(t.get("artifacts"), artifact_to_v03)?);
    put(&mut m, "history", each(t.get("history"), message_to_v03)?);
    Ok(Value::Object(m))
}

/// A 1.0 `StreamResponse`/`SendMessageResponse` wrapper as the 0.3 result object.
pub fn event_to_v03(r: &Value) -> Out {
    if let Some(t) = r.get("task") {
        return task_to_v03(t);
    }
    if let Some(m) = r.get("message") {
        return message_to_v03(m);
    }
    if let Some(u) = r.get("statusUpdate") {
        let mut m = copy(u, &["taskId", "contextId", "metadata"]);
        m.insert("kind".into(), "status-update".into());
        let status = u.get("status").map_or_else(|| Ok(json!({"state": "unknown"})), status_to_v03)?;
        let state = u.pointer("/status/state").and_then(Value::as_str).unwrap_or("");
        m.insert("final".into(), terminal(state).into());
        m.insert("status".into(), status);
        return Ok(Value::Object(m));
    }
    if let Some(u) = r.get("artifactUpdate") {
        let mut m = copy(u, &["taskId", "contextId", "metadata"]);
        m.insert("kind".into(), "artifact-update".into());
        m.insert("append".into(), u.get("append").cloned().unwrap_or(false.into()));
        m.insert("lastChunk".into(), u.get("lastChunk").cloned().unwrap_or(false.into()));
        if let Some(a) = u.get("artifact") {
            m.insert("artifact".into(), artifact_to_v03(a)?);
        }
        return Ok(Value::Object(m));
    }
    Err(Untranslatable("an A2A 1.0 result with none of task, message, statusUpdate, artifactUpdate".into()))
}

fn auth_to_v03(a: &Value) -> Value {
    let mut m = copy(a, &["credentials"]);
    let schemes: Vec<Value> = a.get("scheme").into_iter().cloned().collect();
    m.insert("schemes".into(), Value::Array(schemes));
    Value::Object(m)
}

fn push_to_v03(cfg: &Value) -> Value {
    let mut m = copy(cfg, &["id", "url", "token"]);
    if let Some(a) = cfg.get("authentication").filter(|v| !v.is_null()) {
        m.insert("authentication".into(), auth_to_v03(a));
    }
    Value::Object(m)
}

fn task_push_to_v03(cfg: &Value) -> Value {
    json!({"taskId": cfg.get("taskId").cloned().unwrap_or_default(), "pushNotificationConfig": push_to_v03(cfg)})
}

/// A 1.0 request's params as the 0.3 request of the same method.
pub fn params_to_v03(method: Method, p: &Value) -> Out {
    use Method::*;
    Ok(match method {
        SendMessage | SendStreamingMessage => {
            let mut m = copy(p, &["metadata"]);
            if let Some(msg) = p.get("message") {
                m.insert("message".into(), message_to_v03(msg)?);
            }
            if let Some(c) = p.get("configuration").filter(|v| !v.is_null()) {
                let mut cfg = copy(c, &["acceptedOutputModes", "historyLength"]);
                let immediately = c.get("returnImmediately").and_then(Value::as_bool).unwrap_or(false);
                cfg.insert("blocking".into(), (!immediately).into());
                if let Some(push) = c.get("taskPushNotificationConfig").filter(|v| !v.is_null()) {
                    cfg.insert("pushNotificationConfig".into(), push_to_v03(push));
                }
                m.insert("configuration".into(), Value::Object(cfg));
            }
            Value::Object(m)
        }
        GetTask | CancelTask | SubscribeToTask => {
            Value::Object(copy(p, &["id", "historyLength", "metadata"]))
        }
        CreatePushConfig => task_push_to_v03(p),
        GetPushConfig | DeletePushConfig => {
            let mut m = Map::new();
            put(&mut m, "id", p.get("taskId").cloned());
            put(&mut m, "pushNotificationConfigId", p.get("id").cloned());
            Value::Object(m)
        }
        ListPushConfigs => {
            let mut m = Map::new();
            put(&mut m, "id", p.get("taskId").cloned());
            Value::Object(m)
        }
        ListTasks | GetExtendedAgentCard => {
            return Err(Untranslatable(format!("{} is not bridged between A2A 1.0 and 0.3", method.name())));
        }
    })
}

/// A 1.0 result for `method` as the 0.3 result.
pub fn result_to_v03(method: Method, r: &Value) -> Out {
    use Method::*;
    match method {
        SendMessage | SendStreamingMessage | SubscribeToTask => event_to_v03(r),
        GetTask | CancelTask => task_to_v03(r),
        CreatePushConfig | GetPushConfig => Ok(task_push_to_v03(r)),
        ListPushConfigs => {
            let list = r.get("configs").and_then(Value::as_array).cloned().unwrap_or_default();
            Ok(Value::Array(list.iter().map(task_push_to_v03).collect()))
        }
        DeletePushConfig => Ok(Value::Null),
        ListTasks | GetExtendedAgentCard => {
            Err(Untranslatable(format!("{} is not bridged between A2A 1.0 and 0.3", method.name())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_survives_both_ways() {
        let v03 = json!({"message": {"kind": "message", "messageId": "m1", "role": "user", "taskId": "t1",
            "parts": [{"kind": "text", "text": "hi"}, {"kind": "data", "data": {"a": 1}},
                      {"kind": "file", "file": {"uri": "http://x/f", "mimeType": "text/plain", "name": "f"}}]},
            "configuration": {"blocking": false, "historyLength": 0,
                "pushNotificationConfig": {"url": "http://10.0.0.1/cb", "authentication": {"schemes": ["Bearer"]}}}});
        let v1 = params_to_v1(Method::SendMessage, &v03).unwrap();
        assert_eq!(v1["message"]["role"], "ROLE_USER");
        assert_eq!(v1["message"]["parts"][0], json!({"text": "hi"}));
        assert_eq!(
            v1["message"]["parts"][2],
            json!({"url": "http://x/f", "mediaType": "text/plain", "filename": "f"})
        );
        assert_eq!(v1["configuration"]["returnImmediately"], true);
        assert_eq!(v1["configuration"].get("historyLength"), None, "0.3's 0 means unlimited");
        assert_eq!(v1["configuration"]["taskPushNotificationConfig"]["authentication"]["scheme"], "Bearer");
        let back = params_to_v03(Method::SendMessage, &v1).unwrap();
        assert_eq!(back["message"], v03["message"]);
        assert_eq!(back["configuration"]["blocking"], false);
    }

    #[test]
    fn events_and_states_map_both_ways() {
        let up = json!({"statusUpdate": {"taskId": "t", "contextId": "c",
            "status": {"state": "TASK_STATE_INPUT_REQUIRED"}}});
        let old = event_to_v03(&up).unwrap();
        assert_eq!(old["kind"], "status-update");
        assert_eq!(old["status"]["state"], "input-required");
        assert_eq!(old["final"], false);
        assert_eq!(event_to_v1(&old).unwrap(), up);
        let done = json!({"kind": "task", "id": "t", "contextId": "c", "status": {"state": "completed"},
            "artifacts": [{"artifactId": "a", "parts": [{"kind": "data", "data": {"value": 3},
                "metadata": {"data_part_compat": true}}]}]});
        let v1 = event_to_v1(&done).unwrap();
        assert_eq!(v1["task"]["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(v1["task"]["artifacts"][0]["parts"][0], json!({"data": 3}));
        assert_eq!(event_to_v03(&v1).unwrap(), done);
        let fin = json!({"statusUpdate": {"taskId": "t", "status": {"state": "TASK_STATE_CANCELED"}}});
        assert_eq!(event_to_v03(&fin).unwrap()["final"], true);
    }

    #[test]
    fn what_has_no_counterpart_is_refused_by_name() {
        let e = params_to_v03(Method::ListTasks, &json!({})).unwrap_err();
        assert!(e.0.contains("ListTasks"), "{e}");
        let e = event_to_v1(&json!({"kind": "mystery"})).unwrap_err();
        assert!(e.0.contains("mystery"), "{e}");
        let p = json!({"id": "t1", "pushNotificationConfigId": "c1"});
        let v1 = params_to_v1(Method::GetPushConfig, &p).unwrap();
        assert_eq!(v1, json!({"taskId": "t1", "id": "c1"}));
        assert_eq!(params_to_v03(Method::GetPushConfig, &v1).unwrap(), p);
    }
}
