//! Intercepted HTTPS governed end to end: the official OpenAI SDK and the MCP SDK in an enrolled
//! cgroup call `https://<host>` (their /etc/hosts points it at an intercepted address, their
//! SSL_CERT_FILE holds the node CA); nodegate terminates with a leaf it mints, counts, budgets,
//! injects the provider key and applies tool policy, then re-encrypts to a TLS upstream whose
//! certificate comes from a separate test CA. Passthrough is decided by SNI, and every bad input
//! (no SNI, garbage, an untrusting client, expired or wrong-name upstream certificates) is
//! refused with an audit record.
use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nodegate_tests::{attack::raw, certs::TestCa, mcp::everything, *};

const SIM_KEY: &str = "sk-upstream-secret-tls";

/// The test's PKI: the node CA (made by `nodegate ca init`) and the upstreams' own CA.
struct Pki {
    node_cert: PathBuf,
    node_key: PathBuf,
    upstream: TestCa,
}

fn pki(dir: &Path) -> Pki {
    let (node_cert, node_key) = (dir.join("node-ca.crt"), dir.join("node-ca.key"));
    let out = Command::new(nodegate_bin())
        .args(["ca", "init", "--cert"])
        .arg(&node_cert)
        .arg("--key")
        .arg(&node_key)
        .args(["--days", "2"])
        .output()
        .unwrap_or_else(|e| panic!("nodegate ca init: {e}"));
    assert!(out.status.success(), "ca init: {}", String::from_utf8_lossy(&out.stderr));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&node_key).unwrap_or_else(|e| panic!("{e}")).permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the CA key must be private");
    Pki { node_cert, node_key, upstream: TestCa::new(dir, "upstream-ca") }
}

/// tests/python/tls_server.py: TLS on `host:port` with `leaf`, relaying to `backend`.
fn tls_front(ns: &Netns, host: &str, port: u16, leaf: &certs::Leaf, backend: &str) -> Proc {
    tls_front_mtls(ns, host, port, leaf, backend, None)
}

/// [`tls_front`] that requires a client certificate from `client_ca` when given.
fn tls_front_mtls(
    ns: &Netns,
    host: &str,
    port: u16,
    leaf: &certs::Leaf,
    backend: &str,
    client_ca: Option<&Path>,
) -> Proc {
    let script = repo_root().join("tests/python/tls_server.py").display().to_string();
    let (bh, bp) = backend.rsplit_once(':').unwrap_or((backend, "80"));
    let (c, k, p) = (leaf.cert.display().to_string(), leaf.key.display().to_string(), port.to_string());
    let ca = client_ca.map(|c| c.display().to_string());
    let mut args = vec![script.as_str(), host, &p, &c, &k, bh, bp];
    if let Some(ca) = &ca {
        args.extend(["--client-ca", ca.as_str()]);
    }
    let mut proc = spawn(Path::new("python3"), &args, Some(ns), None, Stdio::piped(), Stdio::inherit());
    let mut line = String::new();
    if let Some(out) = proc.child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    assert_eq!(line.trim(), "listening", "the TLS upstream on {host}:{port} did not start");
    proc
}

/// Runs `argv` in the pod namespace and enrolled cgroup with its own /etc/hosts (a private
/// mount namespace) and `env`: (exit success, stdout, stderr).
fn in_pod(
    topo: &Topology,
    cg: &Cgroup,
    hosts: &Path,
    env: &[String],
    argv: &[&str],
) -> (bool, String, String) {
    let quoted: Vec<String> = argv.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let inner = format!(
        "mount --bind {} /etc/hosts && exec env {} {}",
        hosts.display(),
        env.join(" "),
        quoted.join(" ")
    );
    let child = spawn_child(
        Path::new("unshare"),
        &["--mount", "sh", "-c", &inner],
        Some(&topo.pod),
        Some(cg),
        Stdio::piped(),
        Stdio::piped(),
    );
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str, what: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{what} printed {s:?}: {e}"))
}

fn sdk_in_pod(
    topo: &Topology,
    cg: &Cgroup,
    hosts: &Path,
    ca: Option<&Path>,
    scenario: &str,
    base: &str,
) -> Value {
    let script = repo_root().join("tests/python/llm_clients.py").display().to_string();
    let env: Vec<String> = ca.map(|c| format!("SSL_CERT_FILE={}", c.display())).into_iter().collect();
    let (_, out, err) =
        in_pod(topo, cg, hosts, &env, &["python3", &script, scenario, base, "", "gpt-4o-mini"]);
    assert!(!err.contains("ModuleNotFoundError"), "the openai SDK is not installed: {err}");
    json(&out, scenario)
}

/// The suites' config: an enrolled cgroup named `research-agent`, the node CA, the upstream
/// CA trusted, `passthrough` lines under `tls:`, `destinations` (YAML list items), then `rest`.
fn config(cg: &str, pki: &Pki, passthrough: &str, destinations: &str, rest: &str) -> String {
    format!(
        r#"
listeners: {{ transparent: 0.0.0.0:{TRANSPARENT_PORT}, explicit: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: research-agent, cgroup: "{cg}/enrolled" }}
tls:
  ca: {{ cert: "{}", key: "{}" }}
  upstream: {{ ca_files: ["{}"] }}
{passthrough}
intercept:
  enabled: true
  cgroups: ["{cg}/enrolled"]
  redirect_to: {NODE_IP}:{TRANSPARENT_PORT}
  pin_path: "{{PIN}}"
  destinations:
{destinations}
{rest}
"#,
        pki.node_cert.display(),
        pki.node_key.display(),
        pki.upstream.cert.display()
    )
}

fn llm_config(cg: &str, pki: &Pki) -> String {
    let destinations = format!(
        r#"    - {{ address: {SVC_IP}, ports: [443], class: llm, tls: terminate }}
    - {{ address: {SVC_IP}, ports: [80], class: llm, tls: originate, upstream_tls: {{ server_name: api.llm.test }} }}"#
    );
    let llm = r#"llm:
  default: deny
  allow:
    - { selector: { workloads: [research-agent] }, models: ["*"] }
  providers:
    - { name: upstream-llm, kind: openai, endpoint: "https://api.llm.test", credentials: { env: NG_TLS_SIM_KEY } }
  budgets:
    - { name: tls-team, selector: { workloads: [research-agent] }, tokens_per_day: 60 }"#;
    config(cg, pki, "", &destinations, llm)
}

#[test]
fn https_to_a_provider_is_terminated_counted_budgeted_and_re_encrypted() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let (dir, pin) = Gateway::prepare("tls-llm");
    let pki = pki(&dir);
    let _sim = llm_sim(&topo.node, "127.0.0.1:18441", "provider", &["--tokens", "4"]);
    let leaf = pki.upstream.issue(&dir, "api", &["api.llm.test"], false);
    let _front = tls_front(&topo.node, SVC_IP, 443, &leaf, "127.0.0.1:18441");
    // SAFETY: set before the gateway process is spawned; read only by it.
    unsafe { std::env::set_var("NG_TLS_SIM_KEY", SIM_KEY) };
    let gw = Gateway::start(&dir, &pin, &llm_config(&cg, &pki), Some(&topo.node), None);
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{SVC_IP} api.llm.test\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let count = || {
        get("127.0.0.1:18441", "/sim/count", Some(&topo.node), None)["body"]["count"].as_u64().unwrap_or(0)
    };

    // The agent calls https://api.llm.test with no key, trusting the node CA.
    let v = sdk_in_pod(&topo, enrolled, &hosts, Some(&pki.node_cert), "chat_error", "https://api.llm.test");
    assert_eq!(v["unexpected_success"]["text"], "w0 w1 w2 w3 ", "the SDK must get the answer: {v}");
    let seen = get("127.0.0.1:18441", "/sim/last", Some(&topo.node), None)["body"].clone();
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {SIM_KEY}"), "key injected: {seen}");
    assert_eq!(seen["headers"]["host"], "api.llm.test", "{seen}");
    let rec = gw.wait_audit("terminated llm record", |r| r["kind"] == "llm" && r["status"] == 200);
    assert_eq!(rec["identity"], "research-agent", "{rec}");
    assert_eq!(rec["protocol"], "https", "{rec}");
    assert_eq!(rec["target"], format!("{SVC_IP}:443"), "{rec}");
    assert_eq!(rec["provider"], "upstream-llm", "matched by the verified server name: {rec}");
    assert_eq!(rec["output_tokens"], 4, "usage counted inside TLS: {rec}");

    // Origination: plain http to port 80 leaves nodegate as verified TLS to port 443.
    let served = count();
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let (_, out, err) = in_pod(
        &topo,
        enrolled,
        &hosts,
        &[],
        &[
            "curl",
            "-s",
            "-m",
            "10",
            "-H",
            "content-type: application/json",
            "-d",
            body,
            "http://api.llm.test/v1/chat/completions",
        ],
    );
    let answer = json(&out, &format!("curl (stderr {err})"));
    assert!(answer["choices"].is_array() || answer["error"]["type"].is_string(), "{answer}");
    assert!(
        count() > served
            || answer["error"]["code"] == "budget_exceeded"
            || answer["error"]["type"].is_string(),
        "{answer}"
    );

    // The budget holds inside TLS: calls go on until it refuses one with a 429.
    let mut refused = None;
    for _ in 0..10 {
        let v =
            sdk_in_pod(&topo, enrolled, &hosts, Some(&pki.node_cert), "chat_error", "https://api.llm.test");
        if v["raised"] == "RateLimitError" {
            refused = Some(v);
            break;
        }
        assert!(v["unexpected_success"].is_object(), "{v}");
    }
    let refused = refused.unwrap_or_else(|| panic!("a 60-token budget never refused 4-token answers"));
    assert_eq!(refused["status"], 429, "{refused}");
    let deny = gw.wait_audit("budget refusal", |r| r["kind"] == "llm" && r["status"] == 429);
    assert_eq!(deny["rule"], "llm.budgets.tls-team", "{deny}");

    // A client that does not trust the node CA fails its handshake; nothing is forwarded.
    let before = count();
    let v = sdk_in_pod(&topo, enrolled, &hosts, None, "chat_error", "https://api.llm.test");
    assert_eq!(v["raised"], "APIConnectionError", "{v}");
    assert_eq!(count(), before, "nothing may reach the upstream");
    let hs = gw.wait_audit("handshake refusal", |r| r["rule"] == "tls.handshake");
    assert_eq!(hs["decision"], "deny", "{hs}");
    assert_eq!(hs["sni"], "api.llm.test", "{hs}");

    // No SNI (a client dialling the bare address) and a garbage ClientHello: refused, audited.
    let (ok, _, _) = in_pod(
        &topo,
        enrolled,
        &hosts,
        &[],
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "--cacert",
            &pki.node_cert.display().to_string(),
            &format!("https://{SVC_IP}/v1/models"),
        ],
    );
    assert!(!ok, "a terminated destination cannot be reached without a server name");
    gw.wait_audit("no-SNI refusal", |r| r["rule"] == "tls.no_sni");
    let g = raw(&topo.pod, Some(enrolled), SVC_IP, 443, "tls-garbage");
    assert_eq!(g["received"], "", "{g}");
    wait_until(
        std::time::Duration::from_secs(10),
        "the garbage ClientHello refused as one without a server name",
        || gw.audit_lines().iter().filter(|r| r["rule"] == "tls.no_sni").count() >= 2,
    );
    assert_eq!(count(), before, "nothing may reach the upstream");
}

#[test]
fn passthrough_is_decided_by_sni_and_bad_upstream_certificates_are_refused() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let (dir, pin) = Gateway::prepare("tls-pass");
    let pki = pki(&dir);
    let _sim = llm_sim(&topo.node, "127.0.0.1:18442", "service", &["--tokens", "2"]);
    let pass = pki.upstream.issue(&dir, "pass", &["allowed.pass.test", "denied.pass.test"], false);
    let expired = pki.upstream.issue(&dir, "expired", &["expired.test"], true);
    let other = pki.upstream.issue(&dir, "other", &["someone-else.test"], false);
    let _f1 = tls_front(&topo.node, OTHER_IP, 443, &pass, "127.0.0.1:18442");
    let _f2 = tls_front(&topo.node, OTHER_IP, 8444, &expired, "127.0.0.1:18442");
    let _f3 = tls_front(&topo.node, OTHER_IP, 8445, &other, "127.0.0.1:18442");
    // Two upstreams that require a client certificate from the upstream CA: nodegate presents
    // one to the first (configured) and none to the second.
    let mtls = pki.upstream.issue(&dir, "mtls", &["mtls.test"], false);
    let client = pki.upstream.issue(&dir, "client", &["nodegate.node.test"], false);
    let ca = Some(pki.upstream.cert.as_path());
    let _f4 = tls_front_mtls(&topo.node, OTHER_IP, 8446, &mtls, "127.0.0.1:18442", ca);
    let _f5 = tls_front_mtls(&topo.node, OTHER_IP, 8447, &mtls, "127.0.0.1:18442", ca);
    let destinations = format!(
        r#"    - {{ address: {OTHER_IP}, ports: [443] }}
    - {{ address: {OTHER_IP}, ports: [8444, 8445, 8447], class: http, tls: terminate }}
    - {{ address: {OTHER_IP}, ports: [8446], class: http, tls: terminate, upstream_tls: {{ client_cert: {{ cert: "{}", key: "{}" }} }} }}"#,
        client.cert.display(),
        client.key.display(),
    );
    let passthrough = r#"  passthrough:
    default: deny
    rules:
      - { selector: { workloads: [research-agent] }, sni: ["allowed.pass.test"], decision: allow }"#;
    let cfg = config(&cg, &pki, passthrough, &destinations, "");
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap_or_else(|e| panic!("{e}"));
    let upstream_ca = pki.upstream.cert.display().to_string();
    let node_ca = pki.node_cert.display().to_string();
    let curl = |ca: &str, name: &str, port: u16| {
        let resolve = format!("{name}:{port}:{OTHER_IP}");
        let url = format!("https://{name}:{port}/sim/count");
        in_pod(
            &topo,
            enrolled,
            &hosts,
            &[],
            &["curl", "-s", "-m", "10", "--cacert", ca, "--resolve", &resolve, "-w", "\n%{http_code}", &url],
        )
    };

    // Allowed: the client verifies the upstream's own certificate end to end (nodegate never
    // terminated it: the client does not trust the node CA here).
    let (ok, out, err) = curl(&upstream_ca, "allowed.pass.test", 443);
    assert!(ok && out.ends_with("200"), "allowed SNI must reach the upstream untouched: {out} {err}");
    let allowed =
        gw.wait_audit("passthrough record", |r| r["kind"] == "connection" && r["sni"] == "allowed.pass.test");
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    // Denied by the default, and no SNI at all: refused before a byte goes upstream.
    let (ok, _, _) = curl(&upstream_ca, "denied.pass.test", 443);
    assert!(!ok, "a denied SNI must not connect");
    let d = gw.wait_audit("passthrough denial", |r| r["sni"] == "denied.pass.test");
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["rule"], "tls.passthrough.default", "{d}");
    let (ok, _, _) = in_pod(
        &topo,
        enrolled,
        &hosts,
        &[],
        &["curl", "-s", "-m", "5", "-k", &format!("https://{OTHER_IP}/")],
    );
    assert!(!ok, "no SNI meets the default (deny)");
    gw.wait_audit("no-SNI passthrough denial", |r| r["rule"] == "tls.passthrough.no_sni");

    // Terminated, but the upstream's certificate is expired or names someone else: the client
    // gets a 502 saying why, and the audit holds it.
    for (name, port, why) in
        [("expired.test", 8444, "certificate expired"), ("wrong.test", 8445, "not valid for name")]
    {
        let (_, out, err) = curl(&node_ca, name, port);
        assert!(out.ends_with("502"), "{name}: {out} {err}");
        assert!(out.contains(why), "{name}: the error must say why: {out}");
        let rec = gw.wait_audit("bad upstream certificate", |r| {
            r["kind"] == "http" && r["target"] == format!("{OTHER_IP}:{port}")
        });
        assert_eq!(rec["status"], 502, "{rec}");
        assert!(rec["error"].as_str().unwrap_or("").contains(why), "{rec}");
    }

    // Mutual TLS upstream: with the configured client certificate the request goes through;
    // an upstream that wants one and gets none answers nothing nodegate can pass on.
    let (_, out, err) = curl(&node_ca, "mtls.test", 8446);
    assert!(out.ends_with("200"), "client certificate presented: {out} {err}");
    let (_, out, _) = curl(&node_ca, "mtls.test", 8447);
    assert!(out.ends_with("502"), "no client certificate, no answer: {out}");
}

#[test]
fn mcp_over_https_is_terminated_and_its_tool_policy_holds() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let (dir, pin) = Gateway::prepare("tls-mcp");
    let pki = pki(&dir);
    let _ev = everything(&topo.node, "streamableHttp", 9443);
    let leaf = pki.upstream.issue(&dir, "mcp", &["mcp.test"], false);
    let _front = tls_front(&topo.node, SVC_IP, 8443, &leaf, "127.0.0.1:9443");
    let destinations = format!("    - {{ address: {SVC_IP}, ports: [8443], class: mcp, tls: terminate }}");
    let mcp = r#"mcp:
  default: deny
  servers:
    - { name: everything, url: "https://mcp.test:8443/mcp" }
  policies:
    - selector: { workloads: [research-agent] }
      tools: ["everything/echo"]"#;
    let cfg = config(&cg, &pki, "", &destinations, mcp);
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{SVC_IP} mcp.test\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let script = repo_root().join("tests/python/mcp_clients.py").display().to_string();
    let env = [format!("SSL_CERT_FILE={}", pki.node_cert.display())];
    let calls = r#"[["echo",{"message":"through TLS"}],["get-sum",{"a":1,"b":2}]]"#;
    let (_, out, err) = in_pod(
        &topo,
        enrolled,
        &hosts,
        &env,
        &["python3", &script, "calls", "auto", "https://mcp.test:8443/mcp", "-", calls],
    );
    assert!(!err.contains("ModuleNotFoundError"), "the mcp SDK is not installed: {err}");
    let r = json(&out, &format!("mcp calls (stderr {err})"));
    assert_eq!(r["results"][0]["text"], "Echo: through TLS", "{r}");
    assert_eq!(r["results"][1]["code"], -32003, "a tool outside the policy is refused inside TLS: {r}");
    let ok = gw.wait_audit("mcp call", |v| v["kind"] == "mcp" && v["outcome"] == "ok" && v["name"] == "echo");
    assert_eq!(ok["server"], "everything", "the server is named by its verified host: {ok}");
    assert_eq!(ok["identity"], "research-agent", "{ok}");
    let c = gw.wait_audit("terminated connection", |v| v["kind"] == "connection" && v["sni"] == "mcp.test");
    assert_eq!(c["protocol"], "https", "{c}");
    assert_eq!(c["decision"], "allow", "{c}");
    let d = gw.wait_audit("mcp denial", |v| v["kind"] == "mcp" && v["decision"] == "deny");
    assert_eq!(d["name"], "get-sum", "{d}");
}

/// Client certificates on terminated TLS are credentials: a certificate from the configured
/// client CA names its SPIFFE ID as the principal (which policy rules match), a client without
/// one is served and meets the rules as nobody, and a certificate from another CA fails the
/// handshake (refused, recorded).
#[test]
fn client_certificates_name_principals_on_terminated_tls() {
    require_root();
    let topo = Topology::new();
    let cgroups = TestCgroups::new();
    let (cg, enrolled) = (cgroups.base().to_string(), &cgroups.enrolled);
    let (dir, pin) = Gateway::prepare("tls-client-certs");
    let pki = pki(&dir);
    let _up = upstream(&topo.node, "behind-tls");
    let leaf = pki.upstream.issue(&dir, "api", &["api.test"], false);
    let _front = tls_front(&topo.node, SVC_IP, 8443, &leaf, &format!("127.0.0.1:{UPSTREAM_PORT}"));
    let client_ca = TestCa::new(&dir, "client-ca");
    let agent = client_ca.issue_client(&dir, "agent-a", "spiffe://test/ns/agents/sa/agent-a");
    let rogue =
        TestCa::new(&dir, "rogue-ca").issue_client(&dir, "rogue", "spiffe://test/ns/agents/sa/agent-a");
    let destinations = format!("    - {{ address: {SVC_IP}, ports: [8443], class: http, tls: terminate }}");
    let tls_extra = format!("  client_certs: {{ ca_files: [\"{}\"] }}", client_ca.cert.display());
    let rules = r#"policy:
  rules:
    - { name: agent-a-reads-secrets, when: 'source.principal == "spiffe://test/ns/agents/sa/agent-a"', action: allow }
    - { name: no-secrets, when: 'request.path.startsWith("/secret")', action: deny }"#;
    let cfg = config(&cg, &pki, &tls_extra, &destinations, rules);
    let gw = Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None);
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{SVC_IP} api.test\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ca = pki.node_cert.display().to_string();
    let curl = |cert: Option<&certs::Leaf>| -> String {
        let (c, k) =
            cert.map(|l| (l.cert.display().to_string(), l.key.display().to_string())).unwrap_or_default();
        let mut argv =
            vec!["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", &ca];
        if cert.is_some() {
            argv.extend(["--cert", &c, "--key", &k]);
        }
        argv.push("https://api.test:8443/secret/plans");
        in_pod(&topo, enrolled, &hosts, &[], &argv).1
    };
    assert_eq!(curl(Some(&agent)), "200", "the certificate's principal is allowed");
    let rec = gw.wait_audit("the certified request", |r| r["kind"] == "http" && r["decision"] == "allow");
    assert_eq!(rec["principal"], "spiffe://test/ns/agents/sa/agent-a", "{rec}");
    assert_eq!(rec["rule"], "agent-a-reads-secrets", "{rec}");
    assert_eq!(rec["identity"], "research-agent", "the kernel's workload stays: {rec}");
    assert_eq!(curl(None), "403", "no certificate: nobody, and the deny rule holds");
    let rec = gw.wait_audit("the uncertified request", |r| r["kind"] == "http" && r["decision"] == "deny");
    assert!(rec["principal"].is_null() && rec["rule"] == "no-secrets", "{rec}");
    assert_eq!(curl(Some(&rogue)), "000", "a certificate from another CA must fail the handshake");
    let refused =
        gw.wait_audit("the refused handshake", |r| r["kind"] == "connection" && r["rule"] == "tls.handshake");
    assert_eq!(refused["decision"], "deny", "{refused}");
}
