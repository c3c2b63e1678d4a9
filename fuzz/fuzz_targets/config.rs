//! The YAML config (files, reloads, Kubernetes resources composed into it): parsing and
//! validation must not panic on any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nodegate::config::parse(&String::from_utf8_lossy(data), "fuzz.yaml");
});
