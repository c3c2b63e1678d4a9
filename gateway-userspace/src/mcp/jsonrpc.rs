//! JSON-RPC 2.0 as MCP uses it: classify a message, build results and errors.
use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The server behind the gateway failed, hung or answered garbage.
pub const UPSTREAM_ERROR: i64 = -32002;
/// nodegate's policy refused the request (`data.rule` names the rule).
pub const POLICY_DENIED: i64 = -32003;
/// The client cancelled the request.
pub const REQUEST_CANCELLED: i64 = -32800;
/// MCP: a header disagrees with the body (2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP: the requested protocol version is not spoken here (`data.supported` lists ours).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// One message from a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A reply (result or error) to a request the other side sent; kept whole.
    Response {
        id: Value,
        body: Value,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: i64,
    pub message: String,
    /// The request's id when it could be read, so the error can answer it.
    pub id: Value,
}

impl Message {
    /// Parses one JSON-RPC message (batches are not part of MCP since 2025-06-18).
    pub fn parse(bytes: &[u8]) -> Result<Self, Invalid> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Invalid {
            code: PARSE_ERROR,
            message: format!("parse error: {e}"),
            id: Value::Null,
        })?;
        Self::from_value(v)
    }

    pub fn from_value(v: Value) -> Result<Self, Invalid> {
        let Value::Object(mut m) = v else {
            let message = if v.is_array() {
                "batches are not supported: send one JSON-RPC message per request"
            } else {
                "a JSON-RPC message is an object"
            };
            return Err(Invalid { code: INVALID_REQUEST, message: message.into(), id: Value::Null });
        };
        let id = m.remove("id");
        let bad = |message: &str, id: Option<&Value>| Invalid {
            code: INVALID_REQUEST,
            message: message.to_string(),
            id: id.cloned().unwrap_or(Value::Null),
        };
        if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(bad("\"jsonrpc\" must be \"2.0\"", id.as_ref()));
        }
        if let Some(id) = &id
            && !(id.is_string() || id.is_i64() || id.is_u64())
        {
            return Err(bad("\"id\" must be a string or an integer", None));
        }
        match (m.remove("method"), id) {
            (Some(Value::String(method)), id) => {
                let params = m.remove("params").unwrap_or(Value::Null);
                if !(params.is_object() || params.is_null()) {
                    return Err(Invalid {
                        code: INVALID_PARAMS,
                        message: "\"params\" must be an object".into(),
                        id: id.unwrap_or(Value::Null),
                    });
                }
                Ok(match id {
                    Some(id) => Self::Request { id, method, params },
                    None => Self::Notification { method, params },
                })
            }
            (Some(_), id) => Err(bad("\"method\" must be a string", id.as_ref())),
            (None, Some(id)) if m.contains_key("result") || m.contains_key("error") => {
                m.insert("jsonrpc".into(), Value::from("2.0"));
                m.insert("id".into(), id.clone());
                Ok(Self::Response { id, body: Value::Object(m) })
            }
            (None, id) => {
                Err(bad("a message needs \"method\", or \"result\"/\"error\" with an id", id.as_ref()))
            }
        }
    }
}

pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = Map::new();
    e.insert("code".into(), code.into());
    e.insert("message".into(), message.into());
    if let Some(d) = data {
        e.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

pub fn request(id: &Value, method: &str, params: &Value) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("id".into(), id.clone());
    m.insert("method".into(), method.into());
    if !params.is_null() {
        m.insert("params".into(), params.clone());
    }
    Value::Object(m)
}

pub fn notification(method: &str, params: &Value) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("method".into(), method.into());
    if !params.is_null() {
        m.insert("params".into(), params.clone());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let r = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(r, Message::Request { id: 1.into(), method: "tools/list".into(), params: Value::Null });
        let n = Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(n, Message::Notification { .. }));
        let s = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(s, Message::Response { .. }));
    }

    #[test]
    fn rejects_what_is_not_json_rpc_with_the_id_when_known() {
        assert_eq!(Message::parse(b"{nope").unwrap_err().code, PARSE_ERROR);
        assert_eq!(Message::parse(b"[]").unwrap_err().code, INVALID_REQUEST);
        let e = Message::parse(br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (INVALID_REQUEST, Value::from(7)));
        let e = Message::parse(br#"{"jsonrpc":"2.0","id":7,"method":"x","params":[1]}"#).unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        assert_eq!(
            Message::parse(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).unwrap_err().code,
            INVALID_REQUEST
        );
    }
}
