//! The command line: config validation names every problem with its path; the embedded
//! default passes.
use std::process::Command;

use nodegate_tests::*;

#[test]
fn check_reports_every_problem_with_its_path() {
    let dir = std::env::temp_dir().join(unique("nodegate-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        r#"
intercept:
  enabled: true
  heartbeat: { interval: 5s, timeout: 1s }
  proxy_mark: 0
  destinations:
    - { address: "not a host!", ports: [443] }
    - { address: 10.0.0.0/8, ports: [] }
"#,
    )
    .unwrap();
    let out = Command::new(nodegate_bin()).args(["check", &bad.display().to_string()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config must fail the check");
    for path in [
        "intercept.cgroups",
        "intercept.heartbeat.timeout",
        "intercept.proxy_mark",
        "intercept.destinations[0].address",
        "intercept.destinations[1].ports",
    ] {
        assert!(err.contains(path), "missing {path} in:\n{err}");
    }

    let typo = dir.join("typo.yaml");
    std::fs::write(&typo, "listeners:\n  explicit: 127.0.0.1:99999\n").unwrap();
    let out = Command::new(nodegate_bin()).args(["check", &typo.display().to_string()]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listeners.explicit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let unset = dir.join("env.yaml");
    std::fs::write(&unset, "audit:\n  path: ${NODEGATE_TEST_SURELY_UNSET}\n").unwrap();
    let out = Command::new(nodegate_bin()).args(["check", &unset.display().to_string()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("NODEGATE_TEST_SURELY_UNSET is not set"));

    let def = dir.join("default.yaml");
    let text = Command::new(nodegate_bin()).arg("default-config").output().unwrap().stdout;
    std::fs::write(&def, text).unwrap();
    let out = Command::new(nodegate_bin()).args(["check", &def.display().to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_example_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let out =
                Command::new(nodegate_bin()).args(["check", &p.display().to_string()]).output().unwrap();
            assert!(out.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
            // The examples are what operators copy: deny-by-default, no stdio server as root.
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("(0 warning(s))"), "{}: {stdout}", p.display());
            n += 1;
        }
    }
    assert!(n > 0, "no example configs found in {}", dir.display());
}

#[test]
fn mcp_config_problems_are_all_reported_with_their_paths() {
    let dir = std::env::temp_dir().join(unique("nodegate-cli-mcp-"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("mcp.yaml");
    std::fs::write(
        &bad,
        r#"
mcp:
  session_key: short
  servers:
    - { name: files, url: "http://127.0.0.1:1/mcp" }
    - { name: files, transport: stdio }
    - { name: "bad name", url: "ftp://x" }
    - { name: hdr, url: "http://127.0.0.1:1/mcp", headers: { "bad header": "x" } }
  policies:
    - constraints:
        - { tool: "files/*", when: 'arguments.path.startsWith(' }
"#,
    )
    .unwrap();
    let out = Command::new(nodegate_bin()).args(["check", &bad.display().to_string()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "mcp.servers[1].name",
        "mcp.servers[1].command",
        "mcp.servers[2].name",
        "mcp.servers[2].url",
        "mcp.servers[3].headers.bad header",
        "mcp.session_key",
        "mcp.policies[0].constraints[0].when",
    ] {
        assert!(err.contains(path), "{path} not reported:\n{err}");
    }
    assert!(err.contains("invalid CEL"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
