//! A model server's /metrics (Prometheus text): reading load signals must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nodegate::inference::signals::parse(&String::from_utf8_lossy(data));
});
