//! MCP messages from clients and servers: JSON-RPC reading must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nodegate::mcp::jsonrpc::Message::parse(data);
});
