//! The first bytes of an intercepted connection: protocol classification must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nodegate::proxy::sniff::classify(data);
});
