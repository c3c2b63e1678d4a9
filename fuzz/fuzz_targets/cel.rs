//! CEL conditions from the config (MCP tool conditions): compiling any text must not panic, and
//! a compiled program run against the attributes nodegate provides (with its path functions)
//! must not panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(program) = cel::Program::compile(src) else { return };
    let mut cx = cel::Context::default();
    nodegate::policy::paths::register(&mut cx);
    let args = serde_json::json!({"path": "/srv/data/../etc/passwd", "n": 3, "list": ["a", "b"], "nested": {"x": null}});
    if let Ok(v) = cel::to_value(&args) {
        cx.add_variable_from_value("arguments", v);
    }
    cx.add_variable_from_value("tool", "read_file".to_string());
    cx.add_variable_from_value("server", "files".to_string());
    let _ = program.execute(&cx);
});
