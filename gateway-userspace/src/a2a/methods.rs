//! A2A JSON-RPC methods of both spec generations (1.0 names and the 0.3 names they replaced),
//! and where each carries the task it acts on and any push-notification callback URL.
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V03,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SendMessage,
    SendStreamingMessage,
    GetTask,
    ListTasks,
    CancelTask,
    SubscribeToTask,
    CreatePushConfig,
    GetPushConfig,
    ListPushConfigs,
    DeletePushConfig,
    GetExtendedAgentCard,
}

use Method::*;

const TABLE: &[(Method, &str, Option<&str>)] = &[
    (SendMessage, "SendMessage", Some("message/send")),
    (SendStreamingMessage, "SendStreamingMessage", Some("message/stream")),
    (GetTask, "GetTask", Some("tasks/get")),
    (ListTasks, "ListTasks", Some("tasks/list")),
    (CancelTask, "CancelTask", Some("tasks/cancel")),
    (SubscribeToTask, "SubscribeToTask", Some("tasks/resubscribe")),
    (CreatePushConfig, "CreateTaskPushNotificationConfig", Some("tasks/pushNotificationConfig/set")),
    (GetPushConfig, "GetTaskPushNotificationConfig", Some("tasks/pushNotificationConfig/get")),
    (ListPushConfigs, "ListTaskPushNotificationConfigs", Some("tasks/pushNotificationConfig/list")),
    (DeletePushConfig, "DeleteTaskPushNotificationConfig", Some("tasks/pushNotificationConfig/delete")),
    (GetExtendedAgentCard, "GetExtendedAgentCard", Some("agent/getAuthenticatedExtendedCard")),
];

/// The method a JSON-RPC method name means, and the spec generation the name belongs to.
pub fn parse(name: &str) -> Option<(Method, Version)> {
    TABLE.iter().find_map(|(m, v1, v03)| {
        if *v1 == name {
            Some((*m, Version::V1))
        } else if *v03 == Some(name) {
            Some((*m, Version::V03))
        } else {
            None
        }
    })
}

impl Method {
    /// The 1.0 name (what policy and audit use).
    pub fn name(self) -> &'static str {
        TABLE.iter().find(|(m, _, _)| *m == self).map_or("?", |(_, n, _)| n)
    }

    /// The 0.3 name, for an agent of that generation.
    pub fn v03_name(self) -> &'static str {
        TABLE.iter().find(|(m, _, _)| *m == self).and_then(|(_, _, o)| *o).unwrap_or("?")
    }

    /// Whether the answer is an event stream.
    pub fn streams(self) -> bool {
        matches!(self, SendStreamingMessage | SubscribeToTask)
    }

    /// Whether the call creates (or continues) a task the caller will own.
    pub fn sends(self) -> bool {
        matches!(self, SendMessage | SendStreamingMessage)
    }

    /// The task this call acts on, where the request names one.
    pub fn task_id(self, v: Version, params: &Value) -> Option<String> {
        let at = match (self, v) {
            (SendMessage | SendStreamingMessage, _) => "/message/taskId",
            (GetTask | CancelTask | SubscribeToTask, _) => "/id",
            (CreatePushConfig, _) => "/taskId",
            (GetPushConfig | ListPushConfigs | DeletePushConfig, Version::V1) => "/taskId",
            (GetPushConfig | ListPushConfigs | DeletePushConfig, Version::V03) => "/id",
            (ListTasks | GetExtendedAgentCard, _) => return None,
        };
        params.pointer(at).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// Tasks a message names for context (`referenceTaskIds`).
    pub fn referenced_tasks(self, params: &Value) -> Vec<String> {
        if !self.sends() {
            return Vec::new();
        }
        params
            .pointer("/message/referenceTaskIds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Push-notification callback URLs the call would register.
    pub fn push_urls(self, v: Version, params: &Value) -> Vec<String> {
        let at: &[&str] = match (self, v) {
            (SendMessage | SendStreamingMessage, Version::V1) => {
                &["/configuration/taskPushNotificationConfig/url"]
            }
            (SendMessage | SendStreamingMessage, Version::V03) => {
                &["/configuration/pushNotificationConfig/url"]
            }
            (CreatePushConfig, Version::V1) => &["/url"],
            (CreatePushConfig, Version::V03) => &["/pushNotificationConfig/url"],
            _ => &[],
        };
        at.iter().filter_map(|p| params.pointer(p).and_then(Value::as_str)).map(str::to_string).collect()
    }
}

/// Where a message names the skill it asks for: no field of the spec says, so nodegate reads
/// these `metadata` keys, on the request and then on the message.
const SKILL_KEYS: [&str; 3] = ["skill", "skillId", "skill_id"];

/// The skill a send asks for, if it names one.
pub fn skill_of(params: &Value) -> Option<String> {
    ["/metadata", "/message/metadata"].iter().find_map(|at| {
        let m = params.pointer(at)?;
        SKILL_KEYS
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

/// Most `referenceTaskIds` one message may name (each is checked for ownership).
pub const MAX_REFERENCES: usize = 64;

/// JSON-RPC error codes of the A2A spec, and nodegate's own refusal.
pub mod code {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    pub const TASK_NOT_FOUND: i64 = -32001;
    pub const PUSH_NOT_SUPPORTED: i64 = -32003;
    pub const UNSUPPORTED: i64 = -32004;
    /// Implementation-defined: the caller's policy refuses the call (the message names the rule).
    pub const FORBIDDEN: i64 = -32040;
    /// Implementation-defined: the agent did not answer (or not in time).
    pub const UPSTREAM: i64 = -32041;
    /// Implementation-defined: the request is larger than `a2a.max_body_bytes`.
    pub const TOO_LARGE: i64 = -32042;
    /// Implementation-defined: a `policy.rules` rate limit refuses the call for now.
    pub const RATE_LIMITED: i64 = -32043;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_generations_name_the_same_methods() {
        assert_eq!(parse("SendMessage"), Some((SendMessage, Version::V1)));
        assert_eq!(parse("message/stream"), Some((SendStreamingMessage, Version::V03)));
        assert_eq!(parse("tasks/resubscribe").map(|(m, _)| m.name()), Some("SubscribeToTask"));
        assert_eq!(parse("tasks/delete"), None);
        let p = json!({"taskId": "t1", "id": "cfg"});
        assert_eq!(GetPushConfig.task_id(Version::V1, &p).as_deref(), Some("t1"));
        assert_eq!(GetPushConfig.task_id(Version::V03, &json!({"id": "t2"})).as_deref(), Some("t2"));
        assert_eq!(SendMessage.task_id(Version::V1, &json!({"message": {"taskId": ""}})), None);
        let refs = json!({"message": {"referenceTaskIds": ["a", "", "b"]}});
        assert_eq!(SendMessage.referenced_tasks(&refs), vec!["a".to_string(), "b".to_string()]);
        assert!(GetTask.referenced_tasks(&refs).is_empty());
        let named = json!({"message": {"metadata": {"skillId": "plan"}}, "metadata": {"other": 1}});
        assert_eq!(skill_of(&named).as_deref(), Some("plan"));
        assert_eq!(skill_of(&json!({"metadata": {"skill": ""}})), None);
        let send = json!({"message": {}, "configuration": {"taskPushNotificationConfig": {"url": "http://10.0.0.1/cb"}}});
        assert_eq!(SendMessage.push_urls(Version::V1, &send), vec!["http://10.0.0.1/cb".to_string()]);
    }
}
