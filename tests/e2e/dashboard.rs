//! The live dashboard (`/dashboard` on the admin address) in headless Chromium (Debian's chromium
//! package; .ci/run installs it): after known traffic, per workload, the numbers the page shows
//! are the ones /metrics counts; each pool endpoint's load is listed; the last audit records are
//! there; no key is shown; the page loads nothing from elsewhere. A screenshot is written.
use std::{path::Path, process::Stdio};

use nodegate_tests::{mcp::curl_post, *};
use serde_json::json;

const GW: &str = "127.0.0.1:15080";
const ADMIN: &str = "127.0.0.1:15000";

fn chromium(ns: &Netns, dir: &Path, args: &[&str]) -> (String, String) {
    let profile = dir.join(unique("chromium-"));
    let profile_arg = format!("--user-data-dir={}", profile.display());
    let mut all = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
        &profile_arg,
    ];
    all.extend_from_slice(args);
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed (.ci/run installs Debian's chromium)"
    );
    let out =
        spawn_child(Path::new("/usr/bin/chromium"), &all, Some(ns), None, Stdio::piped(), Stdio::piped())
            .wait_with_output()
            .unwrap_or_else(|e| panic!("chromium: {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The number in the row of `workload`, column `field`, of the dumped DOM.
fn shown(dom: &str, workload: &str, field: &str) -> f64 {
    let row = dom
        .split("<tr ")
        .find(|r| r.starts_with(&format!("data-workload=\"{workload}\"")))
        .unwrap_or_else(|| panic!("no row for {workload} in the page"));
    let at = row.find(&format!("data-f=\"{field}\"")).unwrap_or_else(|| panic!("no {field} for {workload}"));
    let after = &row[at..];
    let start = after.find('>').map_or(0, |i| i + 1);
    after[start..].split('<').next().unwrap_or("").trim().parse().unwrap_or(f64::NAN)
}

#[test]
fn the_dashboard_shows_what_metrics_count() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let dir = scratch_dir("ng-dash-");
    let _sim = llm_sim(ns, "127.0.0.1:18101", "sim", &["--tokens", "5"]);
    let _pool = sim(ns, "vllm-sim", &["127.0.0.1:18201"]);
    let _mcp = sim(ns, "mcp-sim", &["127.0.0.1:18401", "sim"]);
    let (gdir, pin) = Gateway::prepare("dashboard");
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN} }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
identities:
  - {{ name: alice, api_keys: [key-alice-000001] }}
  - {{ name: bob, api_keys: [key-bob-00000001] }}
llm:
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18101" }}
  models:
    - {{ name: fast, targets: [ {{ provider: sim }} ] }}
  allow:
    - {{ selector: {{ principals: [alice] }}, models: ["*"] }}
    - {{ selector: {{ principals: [bob] }}, models: [local-model] }}
  default: deny
inference:
  pools:
    - {{ name: local, models: [local-model], scrape_interval: 100ms, endpoints: [ {{ address: "127.0.0.1:18201" }} ] }}
mcp:
  servers:
    - {{ name: sim, url: "http://127.0.0.1:18401/mcp" }}
"#
    );
    let gw = Gateway::start(&gdir, &pin, &cfg, Some(ns), None);
    let chat = |key: &str, model: &str| {
        let (s, _, _) = curl_post(
            ns,
            &format!("http://{GW}/v1/chat/completions"),
            &["content-type: application/json", &format!("authorization: Bearer {key}")],
            &json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        );
        s
    };
    for _ in 0..3 {
        assert_eq!(chat("key-alice-000001", "fast"), 200);
    }
    for _ in 0..2 {
        assert_eq!(chat("key-bob-00000001", "local-model"), 200);
    }
    assert_eq!(chat("key-bob-00000001", "fast"), 403);
    let mut headers = mcp::modern_headers("tools/call");
    headers.push("authorization: Bearer key-alice-000001".into());
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let body = mcp::modern_request(1, "tools/call", json!({"name": "tool_0", "arguments": {"q": "x"}}));
    let (s, v, _) = curl_post(ns, &format!("http://{GW}/mcp"), &headers, &body);
    assert_eq!(s, 200, "{v}");
    gw.wait_audit("the MCP record", |r| r["kind"] == "mcp");

    let (dom, err) = chromium(ns, &dir, &["--dump-dom", &format!("http://{ADMIN}/dashboard")]);
    assert!(dom.contains("data-loaded=\"1\""), "the page did not load its data: {err}\n{dom}");
    let metrics = mcp::metrics(ns, ADMIN);
    for (who, field, metric, with) in [
        ("alice", "llm_calls", "nodegate_llm_calls_total", vec!["identity=\"alice\""]),
        (
            "alice",
            "output_tokens",
            "nodegate_llm_tokens_total",
            vec!["identity=\"alice\"", "gen_ai_token_type=\"output\""],
        ),
        (
            "alice",
            "input_tokens",
            "nodegate_llm_tokens_total",
            vec!["identity=\"alice\"", "gen_ai_token_type=\"input\""],
        ),
        (
            "alice",
            "tool_calls",
            "nodegate_mcp_calls_total",
            vec!["identity=\"alice\"", "method=\"tools/call\""],
        ),
        ("bob", "llm_calls", "nodegate_llm_calls_total", vec!["identity=\"bob\""]),
        (
            "bob",
            "output_tokens",
            "nodegate_llm_tokens_total",
            vec!["identity=\"bob\"", "gen_ai_token_type=\"output\""],
        ),
    ] {
        let on_page = shown(&dom, who, field);
        let in_metrics = metric_sum(&metrics, metric, &with);
        assert!(in_metrics > 0.0, "{metric} {with:?} counted nothing:\n{metrics}");
        assert_eq!(
            on_page, in_metrics,
            "{who} {field}: the page shows {on_page}, /metrics counts {in_metrics}"
        );
    }
    assert_eq!(shown(&dom, "alice", "llm_calls"), 3.0);
    assert_eq!(shown(&dom, "bob", "denials"), 1.0, "bob's refusal");
    assert!(dom.contains("local / 127.0.0.1:18201"), "the pool endpoint's load is listed");
    assert!(dom.contains("rule=llm.allow[1]"), "the last records are listed, refusals with their rule");
    assert!(!dom.contains("key-alice") && !dom.contains("key-bob"), "a key was shown");
    // Nothing loaded from elsewhere: no external script, style, image or font.
    let page = get(ADMIN, "/dashboard", Some(ns), None)["body"].as_str().unwrap_or_default().to_string();
    for external in ["src=", "<link", "<img", "url(", "@import", "https://"] {
        assert!(!page.contains(external), "the page refers to something outside it ({external})");
    }

    let shot = dir.join("dashboard.png");
    let (_, err) = chromium(
        ns,
        &dir,
        &[
            "--window-size=1200,640",
            &format!("--screenshot={}", shot.display()),
            &format!("http://{ADMIN}/dashboard"),
        ],
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot ({size} bytes): {err}");
    if let Ok(to) = std::env::var("NODEGATE_DASHBOARD_SCREENSHOT") {
        let _ = std::fs::copy(&shot, to);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an admin token the page (which holds no data) is open, but its data is not: no token or
/// a wrong one is refused; the token, given as the page gives it, is accepted.
#[test]
fn the_dashboard_data_needs_the_admin_token() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let (gdir, pin) = Gateway::prepare("dashboard-token");
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
admin: {{ address: {ADMIN}, token: "an-admin-token-0123456789" }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
"#
    );
    let _gw = Gateway::start(&gdir, &pin, &cfg, Some(ns), None);
    let status = |path: &str, token: Option<&str>| -> String {
        let mut args =
            vec!["-s".to_string(), "-o".into(), "/dev/null".into(), "-w".into(), "%{http_code}".into()];
        if let Some(t) = token {
            args.extend(["-H".to_string(), format!("authorization: Bearer {t}")]);
        }
        args.push(format!("http://{ADMIN}{path}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = spawn_child(Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::null())
            .wait_with_output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status("/dashboard", None), "200", "the page holds no data");
    assert_eq!(status("/dashboard/data", None), "401");
    assert_eq!(status("/dashboard/data", Some("not-the-token")), "401");
    assert_eq!(status("/dashboard/data", Some("an-admin-token-0123456789")), "200");
}
