//! The A2A gateway end to end with the official SDK (a2a-sdk 1.x) on both sides: an agent built
//! on the SDK's server (tests/python/a2a_agent.py) registered in nodegate, and the SDK's client
//! (tests/python/a2a_clients.py) reaching it through the explicit listener at `/a2a/echo`, its
//! card fetched through nodegate. Callers are told apart by their nodegate API keys (principals).
use std::{path::Path, process::Stdio, time::Duration};

use nodegate_tests::*;
use serde_json::{Value, json};

const AGENT: &str = "127.0.0.1:18611";
const GW: &str = "http://127.0.0.1:15080";

fn agent(topo: &Topology) -> Proc {
    agent_at(topo, AGENT, "echo", &[])
}

/// An SDK agent named `name` listening at `listen` in the node namespace (`extra`: its flags).
fn agent_at(topo: &Topology, listen: &str, name: &str, extra: &[&str]) -> Proc {
    let script = repo_root().join("tests/python/a2a_agent.py").display().to_string();
    let out = std::env::temp_dir().join(unique("a2a-agent-"));
    let f = std::fs::File::create(&out).unwrap_or_else(|e| panic!("{e}"));
    // `slow` work lasts long enough that a task started by one client is still running while
    // several more SDK clients start up, even on a loaded machine.
    let mut args = vec![script.as_str(), "--listen", listen, "--name", name, "--slow-seconds", "12"];
    args.extend_from_slice(extra);
    let p = spawn(Path::new("python3"), &args, Some(&topo.node), None, Stdio::from(f), Stdio::inherit());
    let https = extra.contains(&"--tls-cert");
    wait_until(Duration::from_secs(15), "the A2A agent up", || {
        if !https {
            return get(listen, "/.well-known/agent-card.json", Some(&topo.node), None)["ok"] == true;
        }
        let url = format!("https://{listen}/.well-known/agent-card.json");
        std::process::Command::new("ip")
            .args(["netns", "exec", &topo.node.name, "curl", "-skf", "-o", "/dev/null", "-m", "2", &url])
            .status()
            .is_ok_and(|s| s.success())
    });
    let _ = std::fs::remove_file(&out);
    p
}

/// One SDK client scenario as `key`'s caller.
fn client(topo: &Topology, scenario: &str, key: &str, extra: &[&str]) -> Value {
    client_at(&topo.node, None, &format!("{GW}/a2a/echo"), scenario, key, extra)
}

/// One SDK client scenario against `url`, from `ns` (and `cgroup`).
fn client_at(
    ns: &Netns,
    cgroup: Option<&Cgroup>,
    url: &str,
    scenario: &str,
    key: &str,
    extra: &[&str],
) -> Value {
    let script = repo_root().join("tests/python/a2a_clients.py").display().to_string();
    let mut args = vec![script.as_str(), url, scenario, "--key", key];
    args.extend_from_slice(extra);
    let child = spawn_child(Path::new("python3"), &args, Some(ns), cgroup, Stdio::piped(), Stdio::piped());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("python3: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "a2a-sdk is not installed (.ci/run installs it): {stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{scenario} printed {stdout:?} ({e}); stderr: {stderr}"))
}

/// A raw POST to the agent's JSON-RPC path through nodegate: (HTTP status, body).
fn raw(topo: &Topology, body: &str, path: &str) -> (u16, Value) {
    raw_as(topo, "key-alice-01", body, path)
}

/// [`raw`] as the caller holding `key`.
fn raw_as(topo: &Topology, key: &str, body: &str, path: &str) -> (u16, Value) {
    raw_to(topo, key, body, &format!("{GW}/a2a/echo{path}"))
}

/// A raw POST of `body` to `url` as the caller holding `key`: (HTTP status, body).
fn raw_to(topo: &Topology, key: &str, body: &str, url: &str) -> (u16, Value) {
    let file = std::env::temp_dir().join(unique("a2a-body-"));
    std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
    let data = format!("@{}", file.display());
    let args = [
        "-s",
        "-m",
        "10",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "-H",
        "A2A-Version: 1.0",
        "-H",
        &format!("Authorization: Bearer {key}"),
        "--data-binary",
        &data,
        url,
    ];
    let child = spawn_child(Path::new("curl"), &args, Some(&topo.node), None, Stdio::piped(), Stdio::null());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn agents_hand_off_through_nodegate_under_policy_and_task_ownership() {
    require_root();
    let topo = Topology::new();
    let _agent = agent(&topo);
    let (dir, pin) = Gateway::prepare("a2a");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: 127.0.0.1:15000 }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: alice, api_keys: [key-alice-01] }}
  - {{ name: bob, api_keys: [key-bob-0001] }}
  - {{ name: mallory, api_keys: [key-mallory1] }}
  - {{ name: carol, api_keys: [key-carol-01] }}
a2a:
  agents: [{{ name: echo, url: "http://{AGENT}" }}]
  default: deny
  max_body_bytes: 65536
  allow:
    - {{ selector: {{ principals: [alice, bob] }}, agents: [echo] }}
    - {{ selector: {{ principals: [mallory] }}, agents: [echo], methods: [GetTask, ListTasks] }}
    - {{ selector: {{ principals: [carol] }}, agents: [echo], skills: ["tag:echo"] }}
  push_allow: [{{ address: 10.0.0.0/8 }}]
  stream_idle: 2s
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);

    // The card comes back pointing through nodegate, and the SDK uses it.
    let card = client(&topo, "card", "key-alice-01", &[]);
    assert_eq!(card["card"]["supportedInterfaces"][0]["url"], format!("{GW}/a2a/echo"), "{card}");
    let sent = client(&topo, "send", "key-alice-01", &[]);
    assert_eq!(sent["texts"], json!(["echo: hello"]), "{sent}");
    let task = sent["task_id"].as_str().unwrap_or_else(|| panic!("no task: {sent}")).to_string();
    let rec = gw.wait_audit("send record", |r| r["kind"] == "a2a" && r["method"] == "SendMessage");
    assert_eq!((rec["principal"].as_str(), rec["agent"].as_str()), (Some("alice"), Some("echo")), "{rec}");
    assert_eq!(
        (rec["task_id"].as_str(), rec["state"].as_str()),
        (Some(task.as_str()), Some("TASK_STATE_COMPLETED")),
        "{rec}"
    );
    assert_eq!(rec["artifacts"], 1, "{rec}");

    // A stream passes through event by event, and its task becomes the caller's.
    let streamed = client(&topo, "stream", "key-alice-01", &["--text", "over a stream"]);
    assert_eq!(
        streamed["states"].as_array().and_then(|s| s.last()).cloned(),
        Some(json!("TASK_STATE_COMPLETED")),
        "{streamed}"
    );
    let stream_task = streamed["task_id"].as_str().unwrap_or_default().to_string();
    let rec = gw.wait_audit("stream record", |r| r["kind"] == "a2a" && r["method"] == "SendStreamingMessage");
    assert_eq!((rec["stream"].as_bool(), rec["events"].as_u64()), (Some(true), Some(4)), "{rec}");
    assert_eq!(rec["task_id"].as_str(), Some(stream_task.as_str()));

    // The owner reads its task; nobody else can, and cannot tell it exists.
    let got = client(&topo, "get", "key-alice-01", &["--task", &task]);
    assert_eq!(got["task"]["id"], task.as_str(), "{got}");
    for key in ["key-bob-0001", "key-mallory1"] {
        let other = client(&topo, "get", key, &["--task", &task]);
        assert_eq!(other["type"], "TaskNotFoundError", "{key}: {other}");
        let nonexistent = client(&topo, "get", "key-alice-01", &["--task", "no-such-task"]);
        assert_eq!(nonexistent["error"], other["error"], "the same answer as for a task that does not exist");
    }
    let cancel = client(&topo, "cancel", "key-bob-0001", &["--task", &stream_task]);
    assert_eq!(cancel["type"], "TaskNotFoundError", "another caller cannot cancel: {cancel}");
    // Nor can another caller pull a task in as context for its own message.
    let sneaky = json!({"jsonrpc": "2.0", "id": 9, "method": "SendMessage", "params": {"message": {
        "messageId": "m9", "role": "ROLE_USER", "parts": [{"text": "what did they ask?"}], "referenceTaskIds": [task]}}})
    .to_string();
    let (_, v) = raw_as(&topo, "key-bob-0001", &sneaky, "");
    assert_eq!(v["error"]["code"], -32001, "a referenced task is checked like the task acted on: {v}");
    let listed = client(&topo, "list", "key-alice-01", &[]);
    let ids: Vec<&str> = listed["ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(ids.contains(&task.as_str()) && ids.contains(&stream_task.as_str()), "{listed}");
    let listed = client(&topo, "list", "key-bob-0001", &[]);
    assert_eq!(listed["ids"], json!([]), "bob sees none of alice's tasks: {listed}");

    // A task still running: another caller can neither cancel nor subscribe to it; its owner
    // follows it to the end, and can cancel another.
    let started = client(&topo, "start", "key-alice-01", &["--text", "slow work"]);
    let running = started["task_id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
    for scenario in ["cancel", "subscribe"] {
        let v = client(&topo, scenario, "key-bob-0001", &["--task", &running]);
        assert_eq!(v["type"], "TaskNotFoundError", "{scenario} by another caller: {v}");
    }
    let followed = client(&topo, "subscribe", "key-alice-01", &["--task", &running]);
    assert_eq!(
        followed["states"].as_array().and_then(|s| s.last()).cloned(),
        Some(json!("TASK_STATE_COMPLETED")),
        "{followed}"
    );
    let second = client(&topo, "start", "key-alice-01", &["--text", "slow again"]);
    let second = second["task_id"].as_str().unwrap_or_default().to_string();
    let cancelled = client(&topo, "cancel", "key-alice-01", &["--task", &second]);
    assert_eq!(cancelled["task"]["status"]["state"], "TASK_STATE_CANCELED", "{cancelled}");

    // An agent that goes quiet mid-stream: the stream ends with an error event after
    // `stream_idle`, the record says so, and the next call is served as usual.
    let hung = client(&topo, "stream", "key-alice-01", &["--text", "hang here"]);
    assert!(hung["error"].as_str().unwrap_or_default().contains("sent nothing"), "{hung}");
    let rec = gw.wait_audit("hung stream record", |r| {
        r["kind"] == "a2a" && r["error"].as_str().is_some_and(|e| e.contains("sent nothing"))
    });
    assert_eq!((rec["outcome"].as_str(), rec["stream"].as_bool()), (Some("error"), Some(true)), "{rec}");
    let after = client(&topo, "send", "key-alice-01", &[]);
    assert_eq!(after["texts"], json!(["echo: hello"]), "{after}");

    // Policy: mallory may only read; a send is refused with the rule named.
    let denied = client(&topo, "send", "key-mallory1", &[]);
    assert!(denied["error"].as_str().unwrap_or_default().contains("a2a.allow[1]"), "{denied}");
    let rec = gw.wait_audit("denied record", |r| r["kind"] == "a2a" && r["decision"] == "deny");
    assert_eq!(rec["rule"], "a2a.allow[1]", "{rec}");
    // Skills: carol may only ask for skills tagged `echo` on the agent's card. Her card lists
    // only those; a message naming one is served, one naming another or none is refused.
    let card = client(&topo, "card", "key-carol-01", &[]);
    let skills: Vec<&str> =
        card["card"]["skills"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(skills, vec!["echo"], "{card}");
    let ok = client(&topo, "send", "key-carol-01", &["--skill", "echo"]);
    assert_eq!(ok["texts"], json!(["echo: hello"]), "{ok}");
    let rec = gw.wait_audit("skill record", |r| {
        r["kind"] == "a2a" && r["principal"] == "carol" && r["method"] == "SendMessage"
    });
    assert_eq!((rec["skill"].as_str(), rec["decision"].as_str()), (Some("echo"), Some("allow")), "{rec}");
    let other = client(&topo, "send", "key-carol-01", &["--skill", "slow", "--text", "slow one"]);
    assert!(other["error"].as_str().unwrap_or_default().contains("skill \"slow\" is not one"), "{other}");
    let none = client(&topo, "send", "key-carol-01", &[]);
    assert!(none["error"].as_str().unwrap_or_default().contains("names no skill"), "{none}");
    let rec = gw.wait_audit("skill denial", |r| {
        r["kind"] == "a2a" && r["principal"] == "carol" && r["decision"] == "deny"
    });
    assert_eq!(rec["rule"], "a2a.allow[2]", "{rec}");

    // A caller no rule names cannot even read the card (default deny).
    let nobody = client(&topo, "send", "no-such-key", &[]);
    assert!(nobody["error"].as_str().unwrap_or_default().contains("403"), "{nobody}");
    let rec = gw.wait_audit("default deny record", |r| r["kind"] == "a2a" && r["rule"] == "a2a.default");
    assert_eq!(rec["method"], "GetAgentCard", "{rec}");

    // Push callbacks: loopback (the node itself) refused whatever the list says; an allowed
    // address is passed on to the agent (which says it has no push support).
    let refused = client(
        &topo,
        "push",
        "key-alice-01",
        &["--task", &task, "--push-url", "http://127.0.0.1:15000/admin"],
    );
    assert!(
        refused["error"].as_str().unwrap_or_default().contains("push notification callback refused"),
        "{refused}"
    );
    let outside =
        client(&topo, "push", "key-alice-01", &["--task", &task, "--push-url", "http://192.0.2.7/cb"]);
    assert!(outside["error"].as_str().unwrap_or_default().contains("a2a.push_allow"), "{outside}");
    let passed =
        client(&topo, "push", "key-alice-01", &["--task", &task, "--push-url", "http://10.1.2.3:8080/cb"]);
    assert_eq!(passed["type"], "PushNotificationNotSupportedError", "reached the agent: {passed}");

    // Bad input: clear JSON-RPC errors, nothing reaches the agent that it should not see.
    // An absolute-form request on the explicit listener to the agent's own address is governed
    // the same: mallory cannot send that way either.
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"around"}]}}}"#;
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.node.name,
            "curl",
            "-s",
            "-m",
            "10",
            "-x",
            GW,
            "-H",
            "content-type: application/json",
        ])
        .args([
            "-H",
            "Authorization: Bearer key-mallory1",
            "--data-binary",
            body,
            &format!("http://{AGENT}/"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], -32040, "absolute-form to the agent is no way around: {v}");
    // Nor is a CONNECT tunnel to it (which would carry calls past policy unseen).
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.node.name, "curl", "-s", "-o", "/dev/null", "-m", "10", "-p", "-x", GW])
        .args(["-w", "%{http_connect}", &format!("http://{AGENT}/.well-known/agent-card.json")])
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "CONNECT to the agent refused");
    let rec = gw.wait_audit("tunnel refused", |r| r["rule"] == "a2a.agents");
    assert!(rec["error"].as_str().unwrap_or_default().contains("/a2a/echo"), "{rec}");

    let (code, v) = raw(&topo, "{not json", "");
    assert_eq!((code, v["error"]["code"].as_i64()), (200, Some(-32700)), "{v}");
    let (_, v) = raw(&topo, r#"{"jsonrpc":"2.0","id":7,"method":"tasks/delete","params":{}}"#, "");
    assert_eq!(v["error"]["code"], -32601, "{v}");
    let (_, v) = raw(&topo, r#"[{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}]"#, "");
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x".repeat(100_000)}]}}}).to_string();
    let (code, _) = raw(&topo, &huge, "");
    assert_eq!(code, 413, "a message over a2a.max_body_bytes");
    // The REST binding is governed the same: mallory's send refused with the rule named.
    let (code, v) = raw_as(
        &topo,
        "key-mallory1",
        r#"{"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}"#,
        "/rest/message:send",
    );
    assert_eq!((code, v["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("a2a.allow[1]"), "{v}");
    let (code, v) = raw(&topo, "{}", "/elsewhere");
    assert_eq!(code, 404, "nothing is served outside the card, JSON-RPC and REST: {v}");
    let m = get("127.0.0.1:15000", "/metrics", Some(&topo.node), None)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        m.contains("nodegate_a2a_calls_total{agent=\"echo\",method=\"GetTask\",outcome=\"not_found\"}"),
        "{m}"
    );
    drop(gw);
}

/// Agents of each wire (JSON-RPC 1.0, HTTP+JSON only, an A2A 0.3 agent) reached by SDK clients
/// of each wire (JSON-RPC 1.0, HTTP+JSON, the SDK's 0.3 transport) through `/a2a/<name>`: every
/// pair works, bridged where they differ (the audit says to what), and policy and task ownership
/// hold across a bridge. What cannot be bridged is refused by name; a card that is not JSON and
/// an agent answering HTML are clear errors.
/// SIGTERM while an A2A stream runs: the gateway waits up to `timeouts.drain`, then ends the
/// stream with a JSON-RPC error event the SDK client reads as such (never a bare cut), records it,
/// and exits.
#[test]
fn a_stream_open_at_the_drain_deadline_ends_with_an_a2a_error_event() {
    require_root();
    let topo = Topology::new();
    let _agent = agent(&topo);
    let (dir, pin) = Gateway::prepare("a2a-drain");
    let cfg = format!(
        r#"
listeners: {{ explicit: 127.0.0.1:15080, transparent: null }}
admin: {{ address: 127.0.0.1:15000 }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
timeouts: {{ drain: 1s }}
identities:
  - {{ name: alice, api_keys: [key-alice-01] }}
a2a:
  agents: [{{ name: echo, url: "http://{AGENT}" }}]
  default: deny
  allow:
    - {{ selector: {{ principals: [alice] }}, agents: [echo] }}
"#
    );
    let mut gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    // `slow` streams a status update every 0.2 s for 12 s.
    let (streamed, took) = std::thread::scope(|scope| {
        let c = scope.spawn(|| client(&topo, "stream", "key-alice-01", &["--text", "slow work"]));
        wait_until(Duration::from_secs(10), "the stream under way", || {
            nodegate_tests::mcp::metrics(&topo.node, "127.0.0.1:15000")
                .contains("nodegate_requests_in_flight 1")
        });
        std::thread::sleep(Duration::from_millis(1000));
        let t = std::time::Instant::now();
        gw.stop();
        (c.join().unwrap_or_else(|e| panic!("client: {e:?}")), t.elapsed())
    });
    assert!(took < Duration::from_secs(4), "shutdown took {took:?} with a 1 s drain");
    let error = streamed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("shutting down") && error.contains("timeouts.drain"),
        "the SDK client did not get the drain error event: {streamed}"
    );
    let rec = gw
        .audit_lines()
        .into_iter()
        .find(|r| r["kind"] == "a2a" && r["method"] == "SendStreamingMessage")
        .unwrap_or_else(|| panic!("no record of the cut stream: {:?}", gw.audit_lines()));
    assert_eq!((rec["outcome"].as_str(), rec["stream"].as_bool()), (Some("error"), Some(true)), "{rec}");
    assert!(rec["events"].as_u64().unwrap_or(0) >= 3, "events passed before the cut: {rec}");
}

#[test]
fn every_wire_reaches_every_agent_through_a_bridge() {
    require_root();
    let topo = Topology::new();
    let _new = agent_at(&topo, "127.0.0.1:18621", "new", &[]);
    let _rest = agent_at(&topo, "127.0.0.1:18622", "rest", &["--binding", "HTTP+JSON"]);
    let _old = agent_at(&topo, "127.0.0.1:18623", "old", &["--v03-only"]);
    // Not an agent: a card that is not JSON, and HTML for anything posted.
    let junk = std::env::temp_dir().join(unique("a2a-junk-"));
    std::fs::create_dir_all(junk.join(".well-known")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(junk.join(".well-known/agent-card.json"), "<html>not a card</html>")
        .unwrap_or_else(|e| panic!("{e}"));
    let junk_dir = junk.display().to_string();
    let _junk = spawn(
        Path::new("python3"),
        &["-m", "http.server", "18624", "--bind", "127.0.0.1", "--directory", &junk_dir],
        Some(&topo.node),
        None,
        Stdio::null(),
        Stdio::null(),
    );
    wait_until(Duration::from_secs(10), "the junk server up", || {
        get("127.0.0.1:18624", "/.well-known/agent-card.json", Some(&topo.node), None)["ok"] == true
    });
    // Agents behind HTTPS: one with a certificate from a CA nodegate is told to trust, one
    // from a CA it does not know.
    let pki = std::env::temp_dir().join(unique("a2a-pki-"));
    std::fs::create_dir_all(&pki).unwrap_or_else(|e| panic!("{e}"));
    let ca = certs::TestCa::new(&pki, "agents-ca");
    let leaf = ca.issue(&pki, "secure", &["127.0.0.1"], false);
    let stranger = certs::TestCa::new(&pki, "stranger-ca").issue(&pki, "shady", &["127.0.0.1"], false);
    let tls_flags = |leaf: &certs::Leaf| [leaf.cert.display().to_string(), leaf.key.display().to_string()];
    let [cert, key] = tls_flags(&leaf);
    let _secure = agent_at(&topo, "127.0.0.1:18625", "secure", &["--tls-cert", &cert, "--tls-key", &key]);
    let [cert, key] = tls_flags(&stranger);
    let _shady = agent_at(&topo, "127.0.0.1:18626", "shady", &["--tls-cert", &cert, "--tls-key", &key]);
    let (dir, pin) = Gateway::prepare("a2a-bridge");
    let cfg = r#"
tls: { upstream: { ca_files: ["CA_FILE"] } }
listeners: { explicit: 127.0.0.1:15080, transparent: null }
admin: { address: 127.0.0.1:15000 }
audit: { path: "{AUDIT}", flush_interval: 50ms }
identities:
  - { name: alice, api_keys: [key-alice-01] }
  - { name: bob, api_keys: [key-bob-0001] }
  - { name: mallory, api_keys: [key-mallory1] }
a2a:
  agents:
    - { name: new, url: "http://127.0.0.1:18621" }
    - { name: rest, url: "http://127.0.0.1:18622" }
    - { name: old, url: "http://127.0.0.1:18623" }
    - { name: junk, url: "http://127.0.0.1:18624" }
    - { name: secure, url: "https://127.0.0.1:18625" }
    - { name: shady, url: "https://127.0.0.1:18626" }
  default: deny
  allow:
    - { selector: { principals: [alice, bob] }, agents: ["*"] }
    - { selector: { principals: [mallory] }, agents: ["*"], methods: [GetTask] }
  push_allow: [{ address: 10.0.0.0/8 }]
"#
    .replace("CA_FILE", &ca.cert.display().to_string());
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let url = |name: &str| format!("{GW}/a2a/{name}");

    // The card offers nodegate's three interfaces, and none of the agent's own URLs.
    let card = client_at(&topo.node, None, &url("old"), "card", "key-alice-01", &[]);
    let ifaces = &card["card"]["supportedInterfaces"];
    assert_eq!(ifaces.as_array().map(Vec::len), Some(3), "{card}");
    assert!(!card.to_string().contains("18623"), "the agent's address is not advertised: {card}");

    // Every client wire to every agent wire: sent and streamed to completion, audited with the
    // caller's binding and generation, and the wire nodegate bridged to.
    let clients: [(&str, &[&str], &str, &str); 3] = [
        ("jsonrpc", &[], "jsonrpc", "1.0"),
        ("rest", &["--binding", "HTTP+JSON"], "rest", "1.0"),
        ("v03", &["--v03"], "jsonrpc", "0.3"),
    ];
    let agents =
        [("new", "JSON-RPC (A2A 1.0)"), ("rest", "HTTP+JSON (A2A 1.0)"), ("old", "JSON-RPC (A2A 0.3)")];
    for (agent_name, agent_wire) in agents {
        for (client_name, flags, binding, version) in clients {
            let what = format!("{client_name} client -> {agent_name} agent");
            let text = format!("hello from {what}");
            let mut args = vec!["--text", text.as_str()];
            args.extend_from_slice(flags);
            let sent = client_at(&topo.node, None, &url(agent_name), "send", "key-alice-01", &args);
            assert_eq!(sent["texts"], json!([format!("echo: {text}")]), "{what}: {sent}");
            let rec = gw.wait_audit(&what, |r| {
                r["kind"] == "a2a"
                    && r["method"] == "SendMessage"
                    && r["agent"] == agent_name
                    && r["binding"] == binding
                    && r["protocol_version"] == version
            });
            let same =
                (binding == "rest") == (agent_name == "rest") && (version == "0.3") == (agent_name == "old");
            let expected = if same { Value::Null } else { json!(agent_wire) };
            assert_eq!(rec["bridged_to"], expected, "{what}: {rec}");
            assert_eq!(rec["state"], "TASK_STATE_COMPLETED", "{what}: {rec}");
            let streamed = client_at(&topo.node, None, &url(agent_name), "stream", "key-alice-01", &args);
            assert_eq!(
                streamed["states"].as_array().and_then(|s| s.last()).cloned(),
                Some(json!("TASK_STATE_COMPLETED")),
                "{what}: {streamed}"
            );
            assert_eq!(streamed["texts"], json!([format!("echo: {text}")]), "{what}: {streamed}");
        }
    }

    // Task ownership across a bridge: alice's task at the 0.3 agent, made over REST, is hers
    // on every wire and nobody else's on any.
    let sent = client_at(&topo.node, None, &url("old"), "send", "key-alice-01", &["--binding", "HTTP+JSON"]);
    let task = sent["task_id"].as_str().unwrap_or_else(|| panic!("{sent}")).to_string();
    for (_, flags, ..) in clients {
        let mut args = vec!["--task", task.as_str()];
        args.extend_from_slice(flags);
        let mine = client_at(&topo.node, None, &url("old"), "get", "key-alice-01", &args);
        assert_eq!(mine["task"]["id"], task.as_str(), "{flags:?}: {mine}");
        assert_eq!(mine["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{flags:?}: {mine}");
        for key in ["key-bob-0001", "key-mallory1"] {
            let theirs = client_at(&topo.node, None, &url("old"), "get", key, &args);
            assert_eq!(theirs["type"], "TaskNotFoundError", "{key} {flags:?}: {theirs}");
        }
    }
    // A running task followed and cancelled over bridges: started over 0.3 at the REST agent,
    // followed to the end by its owner over REST... (another caller cannot), another cancelled.
    let started =
        client_at(&topo.node, None, &url("rest"), "start", "key-alice-01", &["--text", "slow work", "--v03"]);
    let running = started["task_id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
    let blocked =
        client_at(&topo.node, None, &url("rest"), "subscribe", "key-bob-0001", &["--task", &running]);
    assert_eq!(blocked["type"], "TaskNotFoundError", "{blocked}");
    let followed = client_at(
        &topo.node,
        None,
        &url("rest"),
        "subscribe",
        "key-alice-01",
        &["--task", &running, "--v03"],
    );
    assert_eq!(
        followed["states"].as_array().and_then(|s| s.last()).cloned(),
        Some(json!("TASK_STATE_COMPLETED")),
        "{followed}"
    );
    let second = client_at(&topo.node, None, &url("old"), "start", "key-alice-01", &["--text", "slow again"]);
    let second = second["task_id"].as_str().unwrap_or_default().to_string();
    let cancelled = client_at(
        &topo.node,
        None,
        &url("old"),
        "cancel",
        "key-alice-01",
        &["--task", &second, "--binding", "HTTP+JSON"],
    );
    assert_eq!(cancelled["task"]["status"]["state"], "TASK_STATE_CANCELED", "{cancelled}");

    // Policy on the REST wire: a refusal is 403 PERMISSION_DENIED naming the rule; a push
    // callback to the node itself is refused before any agent hears of it.
    let denied =
        client_at(&topo.node, None, &url("old"), "send", "key-mallory1", &["--binding", "HTTP+JSON"]);
    assert!(denied["error"].as_str().unwrap_or_default().contains("403"), "{denied}");
    let rec = gw.wait_audit("denied over REST", |r| {
        r["kind"] == "a2a" && r["decision"] == "deny" && r["binding"] == "rest"
    });
    assert_eq!((rec["rule"].as_str(), rec["agent"].as_str()), (Some("a2a.allow[1]"), Some("old")), "{rec}");
    let push = r#"{"url": "http://127.0.0.1:15000/admin", "id": "cb"}"#;
    let (code, v) = rest_call(&topo, "old", &format!("/rest/tasks/{task}/pushNotificationConfigs"), push);
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap_or_default().contains("push notification callback refused"),
        "{v}"
    );

    // What has no counterpart is refused by name: A2A 0.3 has no ListTasks.
    let listed = client_at(&topo.node, None, &url("old"), "list", "key-alice-01", &[]);
    assert_eq!(listed["type"], "UnsupportedOperationError", "{listed}");
    assert!(listed["error"].as_str().unwrap_or_default().contains("ListTasks"), "{listed}");

    // Not an agent: its card is refused as not JSON, a call gets a JSON-RPC error saying what
    // came back, and the others are served as before.
    let card = client_at(&topo.node, None, &url("junk"), "card", "key-alice-01", &[]);
    assert!(card["error"].as_str().unwrap_or_default().contains("502"), "{card}");
    let rec = gw.wait_audit("junk card", |r| r["kind"] == "a2a" && r["agent"] == "junk");
    assert!(rec["error"].as_str().unwrap_or_default().contains("not a JSON object"), "{rec}");
    let body = r#"{"jsonrpc":"2.0","id":4,"method":"SendMessage","params":{"message":{"messageId":"m4","role":"ROLE_USER","parts":[{"text":"hi"}]}}}"#;
    let (code, v) = raw_to(&topo, "key-alice-01", body, &url("junk"));
    assert_eq!((code, v["error"]["code"].as_i64()), (200, Some(-32041)), "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("not JSON"), "{v}");
    let after = client_at(&topo.node, None, &url("new"), "send", "key-alice-01", &[]);
    assert_eq!(after["texts"], json!(["echo: hello"]), "{after}");
    let _ = std::fs::remove_dir_all(&junk);

    // HTTPS agents: verified against tls.upstream.ca_files, streamed like any other; one whose
    // certificate nodegate cannot verify is an error that says so, and nothing is sent to it.
    let sent =
        client_at(&topo.node, None, &url("secure"), "stream", "key-alice-01", &["--binding", "HTTP+JSON"]);
    assert_eq!(sent["texts"], json!(["echo: hello"]), "{sent}");
    let card = client_at(&topo.node, None, &url("shady"), "card", "key-alice-01", &[]);
    assert!(card["error"].as_str().unwrap_or_default().contains("502"), "{card}");
    let rec = gw.wait_audit("shady card", |r| r["kind"] == "a2a" && r["agent"] == "shady");
    assert!(rec["error"].as_str().unwrap_or_default().to_lowercase().contains("certificate"), "{rec}");
    let _ = std::fs::remove_dir_all(&pki);
    drop(gw);
}

/// A POST to nodegate's REST interface for `agent` as alice: (HTTP status, body).
fn rest_call(topo: &Topology, agent: &str, path: &str, body: &str) -> (u16, Value) {
    raw_to(topo, "key-alice-01", body, &format!("{GW}/a2a/{agent}{path}"))
}

/// Intercepted A2A traffic (a destination classed `a2a`) is governed in place: the agent's own
/// card passes unchanged, calls are checked against the caller the kernel names, and tasks stay
/// their creator's.
#[test]
fn intercepted_a2a_is_governed_in_place() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let cg = cgroups.base().to_string();
    let other = Cgroup::new(&format!("{cg}/other"));
    let script = repo_root().join("tests/python/a2a_agent.py").display().to_string();
    let listen = format!("0.0.0.0:{UPSTREAM_PORT}");
    let seen = std::env::temp_dir().join(unique("a2a-seen-"));
    let url = format!("http://{SVC_IP}:{UPSTREAM_PORT}");
    let _agent = spawn(
        Path::new("python3"),
        &[
            &script,
            "--listen",
            &listen,
            "--name",
            "echo",
            "--url",
            &url,
            "--log-headers",
            &seen.display().to_string(),
        ],
        Some(&topo.node),
        None,
        Stdio::null(),
        Stdio::inherit(),
    );
    wait_until(Duration::from_secs(15), "the A2A agent up", || {
        get(&format!("127.0.0.1:{UPSTREAM_PORT}"), "/.well-known/agent-card.json", Some(&topo.node), None)["ok"]
            == true
    });
    // A second agent speaking only the REST binding, on the next port.
    let rest_port = UPSTREAM_PORT + 1;
    let rest_url = format!("http://{SVC_IP}:{rest_port}");
    let _rest_agent = agent_at(
        &topo,
        &format!("0.0.0.0:{rest_port}"),
        "rest",
        &["--binding", "HTTP+JSON", "--url", &rest_url],
    );
    let (dir, pin) = Gateway::prepare("a2a-transparent");
    let cfg = format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: planner, cgroup: "{cg}/enrolled" }}
  - {{ name: intruder, cgroup: "{cg}/other" }}
  - {{ name: planner-key, api_keys: [key-planner-1] }}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled", "{cg}/other"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
    - {{ address: {SVC_IP}, ports: [{UPSTREAM_PORT}, {rest_port}], class: a2a }}
a2a:
  default: deny
  allow:
    - {{ selector: {{ workloads: [planner] }}, agents: ["*"] }}
    - {{ selector: {{ workloads: [intruder] }}, agents: ["*"], methods: [GetTask] }}
"#
    );
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let planner = Some(&cgroups.enrolled);
    let card = client_at(&topo.pod, planner, &url, "card", "key-planner-1", &[]);
    assert_eq!(
        card["card"]["supportedInterfaces"][0]["url"],
        url.as_str(),
        "the agent's own card, unchanged: {card}"
    );
    let sent = client_at(&topo.pod, planner, &url, "send", "key-planner-1", &[]);
    // nodegate's key never reaches the agent, for the card or a call.
    let seen_text = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(seen_text.contains("agent-card.json") && seen_text.lines().count() >= 2, "{seen_text}");
    assert!(!seen_text.contains("key-planner-1"), "the agent saw nodegate's key: {seen_text}");
    let _ = std::fs::remove_file(&seen);
    assert_eq!(sent["texts"], json!(["echo: hello"]), "{sent}");
    let task = sent["task_id"].as_str().unwrap_or_default().to_string();
    let rec = gw.wait_audit("intercepted send", |r| r["kind"] == "a2a" && r["method"] == "SendMessage");
    assert_eq!(
        (rec["mode"].as_str(), rec["identity"].as_str()),
        (Some("transparent"), Some("planner")),
        "{rec}"
    );
    assert_eq!(rec["task_id"].as_str(), Some(task.as_str()), "{rec}");
    let mine = client_at(&topo.pod, planner, &url, "get", "key-planner-1", &["--task", &task]);
    assert_eq!(mine["task"]["id"], task.as_str(), "{mine}");
    // Another workload, named by its cgroup: may read tasks, but not this one, and may not send.
    let theirs = client_at(&topo.pod, Some(&other), &url, "get", "-", &["--task", &task]);
    assert_eq!(theirs["type"], "TaskNotFoundError", "{theirs}");
    let denied = client_at(&topo.pod, Some(&other), &url, "send", "-", &[]);
    assert!(denied["error"].as_str().unwrap_or_default().contains("a2a.allow[1]"), "{denied}");
    let rec = gw.wait_audit("intercepted denial", |r| r["kind"] == "a2a" && r["decision"] == "deny");
    assert_eq!(rec["identity"], "intruder", "{rec}");
    // The REST binding is governed in place the same way.
    let rest = ["--binding", "HTTP+JSON"];
    let sent = client_at(&topo.pod, planner, &rest_url, "send", "-", &rest);
    assert_eq!(sent["texts"], json!(["echo: hello"]), "{sent}");
    let rest_task = sent["task_id"].as_str().unwrap_or_default().to_string();
    let rec = gw.wait_audit("intercepted REST send", |r| r["kind"] == "a2a" && r["binding"] == "rest");
    assert_eq!(
        (rec["identity"].as_str(), rec["task_id"].as_str()),
        (Some("planner"), Some(rest_task.as_str())),
        "{rec}"
    );
    assert_eq!(rec["bridged_to"], Value::Null, "in place, not bridged: {rec}");
    let mut args = vec!["--task", rest_task.as_str()];
    args.extend_from_slice(&rest);
    let mine = client_at(&topo.pod, planner, &rest_url, "get", "-", &args);
    assert_eq!(mine["task"]["id"], rest_task.as_str(), "{mine}");
    let theirs = client_at(&topo.pod, Some(&other), &rest_url, "get", "-", &args);
    assert_eq!(theirs["type"], "TaskNotFoundError", "{theirs}");
    let denied = client_at(&topo.pod, Some(&other), &rest_url, "send", "-", &rest);
    assert!(denied["error"].as_str().unwrap_or_default().contains("403"), "{denied}");
    // Outside the enrolled cgroups nothing is intercepted: the agent answers anyone.
    let free = client_at(&topo.pod, None, &url, "get", "-", &["--task", &task]);
    assert_eq!(free["task"]["id"], task.as_str(), "not intercepted: {free}");
}

/// Two nodegate replicas sharing task owners through Redis: a task created through one is its
/// creator's through the other too, and nobody else's; with Redis gone, a task the second
/// replica never saw is "not found" there (fail closed), while the first still knows it.
#[test]
fn task_owners_are_shared_across_replicas_through_redis() {
    require_root();
    let topo = Topology::new();
    let mut redis = redis_server(&topo.node, 16390);
    let _agent = agent(&topo);
    let replica = |tag: &str, port: u16, admin: u16| {
        let (dir, pin) = Gateway::prepare(tag);
        let cfg = format!(
            r#"
listeners: {{ explicit: 127.0.0.1:{port}, transparent: null }}
admin: {{ address: 127.0.0.1:{admin} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: alice, api_keys: [key-alice-01] }}
  - {{ name: bob, api_keys: [key-bob-0001] }}
a2a:
  agents: [{{ name: echo, url: "http://{AGENT}" }}]
  redis_url: "redis://127.0.0.1:16390/0"
"#
        );
        Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None)
    };
    let _one = replica("a2a-replica-1", 15080, 15000);
    let _two = replica("a2a-replica-2", 15082, 15002);
    let (first, second) = ("http://127.0.0.1:15080/a2a/echo", "http://127.0.0.1:15082/a2a/echo");
    let sent = client_at(&topo.node, None, first, "send", "key-alice-01", &[]);
    let task = sent["task_id"].as_str().unwrap_or_else(|| panic!("{sent}")).to_string();
    let there = client_at(&topo.node, None, second, "get", "key-alice-01", &["--task", &task]);
    assert_eq!(
        there["task"]["id"],
        task.as_str(),
        "the creator follows its task through the other replica: {there}"
    );
    let bob = client_at(&topo.node, None, second, "get", "key-bob-0001", &["--task", &task]);
    assert_eq!(bob["type"], "TaskNotFoundError", "{bob}");

    // Redis gone: the first replica still knows its own task; the second fails closed for one
    // it has never seen.
    let later = client_at(&topo.node, None, first, "send", "key-alice-01", &[]);
    let later = later["task_id"].as_str().unwrap_or_default().to_string();
    redis.kill9();
    let here = client_at(&topo.node, None, first, "get", "key-alice-01", &["--task", &later]);
    assert_eq!(here["task"]["id"], later.as_str(), "{here}");
    let unseen = client_at(&topo.node, None, second, "get", "key-alice-01", &["--task", &later]);
    assert_eq!(unseen["type"], "TaskNotFoundError", "without Redis, an unseen task is not found: {unseen}");
}
