//! JSON Web Tokens as credentials, with tokens minted by PyJWT (tests/python/jwt_mint.py) and the
//! issuer's JWKS from a file and from a URL. A valid token names its principal (`sub`), which the
//! allow list lets through, and never reaches the provider; every attack token (expired, not yet
//! valid, another audience or issuer, a key the JWKS lacks, `alg: none`, HS256 keyed with the
//! public key) names nobody, so the caller meets the default (deny).
use std::{path::Path, process::Stdio, time::Duration};

use nodegate_tests::{mcp::curl_post, *};

const GW: &str = "127.0.0.1:15080";

fn tokens(jwks: &Path) -> Value {
    let script = repo_root().join("tests/python/jwt_mint.py").display().to_string();
    let out = std::process::Command::new("python3")
        .args([script.as_str(), &jwks.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("ModuleNotFoundError"),
        "PyJWT is not installed (.ci/run installs pyjwt[crypto]): {err}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("jwt_mint.py: {e}: {err}"))
}

fn gateway(topo: &Topology, tag: &str, jwt: &str) -> Gateway {
    let (dir, pin) = Gateway::prepare(tag);
    let cfg = format!(
        r#"
listeners: {{ explicit: {GW}, transparent: null }}
audit: {{ path: "{{AUDIT}}", flush_interval: 50ms }}
jwt: {jwt}
llm:
  providers:
    - {{ name: sim, kind: openai, endpoint: "http://127.0.0.1:18101" }}
  models:
    - {{ name: fast, targets: [ {{ provider: sim }} ] }}
  allow:
    - {{ selector: {{ principals: [researcher] }}, models: [fast] }}
  default: deny
"#
    );
    Gateway::start(&dir, &pin, &cfg, Some(&topo.node), None)
}

fn chat(ns: &Netns, token: &str) -> u16 {
    let (s, _, _) = curl_post(
        ns,
        &format!("http://{GW}/v1/chat/completions"),
        &["content-type: application/json", &format!("authorization: Bearer {token}")],
        r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
    );
    s
}

#[test]
fn a_valid_token_names_its_principal_and_attack_tokens_name_nobody() {
    require_root();
    let topo = Topology::new();
    let ns = &topo.node;
    let dir = scratch_dir("ng-jwt-");
    let jwks = dir.join("jwks.json");
    let t = tokens(&jwks);
    let _sim = llm_sim(ns, "127.0.0.1:18101", "sim", &["--tokens", "3"]);
    let jwt = format!(
        r#"{{ issuer: "https://issuer.test", audiences: [nodegate], jwks_file: "{}" }}"#,
        jwks.display()
    );
    let gw = gateway(&topo, "jwt-file", &jwt);

    let valid = t["valid"].as_str().unwrap_or_default();
    assert_eq!(chat(ns, valid), 200, "a valid token names `researcher`, whom the allow list lets through");
    let rec = gw.wait_audit("the token's call", |r| r["kind"] == "llm" && r["decision"] == "allow");
    assert_eq!(rec["principal"], "researcher", "{rec}");
    let up = get("127.0.0.1:18101", "/sim/last", Some(ns), None)["body"]["headers"].clone();
    assert!(
        up.get("authorization").is_none() && !up.to_string().contains(valid),
        "the token went upstream: {up}"
    );

    for attack in [
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "wrong_key",
        "none",
        "hs256_with_public_key",
    ] {
        let token = t[attack].as_str().unwrap_or_default();
        assert!(!token.is_empty(), "{attack} missing: {t}");
        assert_eq!(chat(ns, token), 403, "{attack}: the caller must meet the default (deny)");
    }
    // A token addressed to nodegate goes no further even when it is not valid.
    let expired = t["expired"].as_str().unwrap_or_default();
    let (s, _, _) = curl_post(
        ns,
        &format!("http://{GW}/v1/chat/completions"),
        &[
            "content-type: application/json",
            &format!("authorization: Bearer {valid}"),
            &format!("x-api-key: {expired}"),
        ],
        r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(s, 200);
    let up = get("127.0.0.1:18101", "/sim/last", Some(ns), None)["body"]["headers"].clone();
    assert!(!up.to_string().contains(expired), "an expired nodegate token went upstream: {up}");
    let mut denied: Vec<Value> = Vec::new();
    wait_until(Duration::from_secs(10), "the seven refusals recorded", || {
        denied =
            gw.audit_lines().into_iter().filter(|r| r["kind"] == "llm" && r["decision"] == "deny").collect();
        denied.len() >= 7
    });
    assert_eq!(denied.len(), 7, "the seven attack tokens: {denied:?}");
    assert!(denied.iter().all(|r| r["principal"].is_null()), "an attack token named a principal: {denied:?}");
    // No credential at all: the default as well.
    assert_eq!(chat(ns, "not-a-token"), 403);
    drop(gw);

    // The same keys from a URL (fetched at start and every jwks_refresh). Until the first fetch
    // succeeds no token can be checked, and /readyz says the node is not ready.
    let jwt = r#"{ issuer: "https://issuer.test", audiences: [nodegate], jwks_url: "http://127.0.0.1:18601/jwks.json" }"#;
    let _gw = gateway(&topo, "jwt-url", jwt);
    std::thread::sleep(Duration::from_millis(500));
    let detail = get("127.0.0.1:15000", "/readyz/detail", Some(ns), None);
    assert_eq!(detail["status"], 503, "not ready before the JWKS is fetched: {detail}");
    assert_eq!(detail["body"]["jwt"]["keys"], 0, "{detail}");
    assert_eq!(chat(ns, valid), 403, "no keys yet: the token names nobody");
    let _http = spawn(
        Path::new("python3"),
        &["-m", "http.server", "18601", "--bind", "127.0.0.1", "--directory", &dir.display().to_string()],
        Some(ns),
        None,
        Stdio::null(),
        Stdio::null(),
    );
    wait_until(Duration::from_secs(10), "the JWKS served", || {
        get("127.0.0.1:18601", "/jwks.json", Some(ns), None)["status"] == 200
    });
    wait_until(Duration::from_secs(10), "ready once the JWKS is fetched", || {
        get("127.0.0.1:15000", "/readyz", Some(ns), None)["status"] == 200
    });
    wait_until(Duration::from_secs(10), "the valid token accepted with keys from the URL", || {
        chat(ns, valid) == 200
    });
    assert_eq!(chat(ns, t["wrong_key"].as_str().unwrap_or_default()), 403);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A JWKS file that cannot be read stops nodegate at start, naming it; a JWKS without a usable
/// public key (only a symmetric one) too.
#[test]
fn a_bad_jwks_is_refused_at_start() {
    let dir = scratch_dir("ng-jwt-bad-");
    let cfg = dir.join("c.yaml");
    for (jwks, want) in [
        (None, "reading the JWKS"),
        (Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#), "no usable public key"),
    ] {
        let path = dir.join("jwks.json");
        let _ = std::fs::remove_file(&path);
        if let Some(j) = jwks {
            std::fs::write(&path, j).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(
            &cfg,
            format!(
                "listeners: {{ explicit: 127.0.0.1:0, transparent: null }}\nadmin: {{ address: 127.0.0.1:0 }}\njwt: {{ issuer: i, audiences: [a], jwks_file: \"{}\" }}\n",
                path.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new(nodegate_bin())
            .args(["run", "--config", &cfg.display().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && err.contains(want), "{want}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
