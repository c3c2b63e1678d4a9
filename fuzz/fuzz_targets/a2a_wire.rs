//! A2A requests and answers from untrusted peers: JSON-RPC (either generation) and REST requests
//! read, written out on every wire, and agents' answers and stream events read on every wire.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nodegate::a2a::{
    methods::Method,
    wire::{self, Wire},
};

const WIRES: [Wire; 3] = [Wire::JSONRPC, Wire::JSONRPC_03, Wire::REST];
const METHODS: [Method; 11] = [
    Method::SendMessage,
    Method::SendStreamingMessage,
    Method::GetTask,
    Method::ListTasks,
    Method::CancelTask,
    Method::SubscribeToTask,
    Method::CreatePushConfig,
    Method::GetPushConfig,
    Method::ListPushConfigs,
    Method::DeletePushConfig,
    Method::GetExtendedAgentCard,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    // A JSON-RPC request, written for every wire.
    if let Ok((op, _)) = wire::read_jsonrpc(rest) {
        for w in WIRES {
            let _ = wire::write(w, &op);
        }
    }
    // A REST request: the first line is the path and query, the rest the body.
    let verbs = [http::Method::GET, http::Method::POST, http::Method::DELETE, http::Method::PUT];
    let text = String::from_utf8_lossy(rest);
    let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (path, query) = line.split_once('?').map_or((line, None), |(p, q)| (p, Some(q)));
    if let Ok(op) = wire::read_rest(&verbs[sel as usize % verbs.len()], path, query, body.as_bytes()) {
        for w in WIRES {
            let _ = wire::write(w, &op);
        }
    }
    // An agent's answer and stream event, read on a wire and written for every client wire.
    let (w, m) = (WIRES[sel as usize % 3], METHODS[(sel as usize / 3) % METHODS.len()]);
    let status = if sel & 0x80 == 0 { http::StatusCode::OK } else { http::StatusCode::NOT_FOUND };
    for a in [wire::read_answer(w, m, status, rest), wire::read_event(w, m, rest)] {
        for to in WIRES {
            let _ = wire::answer_body(to, Some(m), &serde_json::Value::Null, &a);
            let _ = wire::event_bytes(to, m, &serde_json::json!(1), &a);
        }
    }
});
