//! A2A objects between generations: any JSON as a request, a result and an event of every
//! method, both ways, and a 1.0 object taken to 0.3 and back must come back readable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nodegate::a2a::{convert, methods::Method};

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
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for m in METHODS {
        let _ = convert::params_to_v1(m, &v);
        let _ = convert::params_to_v03(m, &v);
        let _ = convert::result_to_v1(m, &v);
        let _ = convert::result_to_v03(m, &v);
    }
    if let Ok(old) = convert::event_to_v03(&v) {
        // What nodegate writes in 0.3 it must read back.
        assert!(convert::event_to_v1(&old).is_ok(), "0.3 written by nodegate is unreadable: {old}");
    }
    if let Ok(new) = convert::event_to_v1(&v) {
        assert!(convert::event_to_v03(&new).is_ok(), "1.0 written by nodegate is unreadable: {new}");
    }
});
