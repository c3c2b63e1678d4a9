//! Test harness for nodegate's end-to-end suites: network namespaces joined by veth, child
//! cgroups under the cgroup2 mount, processes started inside them, and a running `nodegate` with
//! a private pin directory. Everything created is removed on drop, also when a test fails.
//!
//! These tests need root, a cgroup2 mount and BPF. They fail with a message when they cannot
//! have them; they never pass silently.
pub mod attack;
pub mod certs;
pub mod kube;
pub mod mcp;

pub mod raw;

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

pub use serde_json::Value;

/// Addresses of the standard topology (link-local: they exist only inside our namespaces).
pub const NODE_IP: &str = "169.254.77.1";
pub const POD_IP: &str = "169.254.77.2";
/// A "service" address on the node, intercepted in the tests.
pub const SVC_IP: &str = "169.254.88.10";
/// A second address on the node, not intercepted unless a test says so.
pub const OTHER_IP: &str = "169.254.88.20";
pub const UPSTREAM_PORT: u16 = 8080;
pub const TRANSPARENT_PORT: u16 = 15001;

/// Fails the test unless we are root with a cgroup2 mount.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this end-to-end test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to create namespaces, cgroups and load eBPF; run it as root"
    );
    assert!(
        cgroup2_root().is_some(),
        "no cgroup2 mount found in /proc/self/mountinfo; eBPF cgroup programs need one"
    );
}

pub fn cgroup2_root() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Directory of the workspace's built binaries: `NODEGATE_BIN_DIR` when set (the benchmarks
/// use release builds), else the test executable's `<dir>/deps/..`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NODEGATE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
}

pub fn probe_bin() -> PathBuf {
    let p = bin_dir().join("ng-probe");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build --bins`; `cargo xtask test` does both)",
        p.display()
    );
    p
}

pub fn nodegate_bin() -> PathBuf {
    let p = bin_dir().join("nodegate");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build --bins`; `cargo xtask test` does both)",
        p.display()
    );
    p
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name]);
        sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    pub fn exec(&self, cmd: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str(), cmd];
        all.extend_from_slice(args);
        sh("ip", &all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Runs `f` on a thread that has entered `ns`'s network namespace (setns affects only the
/// calling thread). Sockets made there stay in `ns` and may be used from any thread afterwards.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("the thread in {path} panicked"))
    })
}

/// nodegate's default `intercept.proxy_mark`, which iptables rules must exclude.
pub const PROXY_MARK: &str = "0x4e470001";

/// In `ns`: nat OUTPUT REDIRECT of `ip:port` to local `to_port`, except nodegate's own
/// (marked) sockets. The rules vanish with the namespace.
pub fn iptables_redirect(ns: &Netns, ip: &str, port: u16, to_port: u16) {
    let (port, to_port) = (port.to_string(), to_port.to_string());
    let base = ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", &port];
    let mut own = base.to_vec();
    own.extend(["-m", "mark", "--mark", PROXY_MARK, "-j", "RETURN"]);
    ns.exec("iptables", &own);
    let mut redirect = base.to_vec();
    redirect.extend(["-j", "REDIRECT", "--to-ports", &to_port]);
    ns.exec("iptables", &redirect);
}

/// A "node" namespace (proxy, upstream, service addresses on its loopback) and a "pod"
/// namespace joined to it by veth, with a default route through the node.
pub struct Topology {
    pub node: Netns,
    pub pod: Netns,
}

impl Topology {
    pub fn new() -> Self {
        let node = Netns::new("ngn");
        let pod = Netns::new("ngp");
        node.ip(&[
            "link",
            "add",
            "veth-node",
            "type",
            "veth",
            "peer",
            "name",
            "veth-pod",
            "netns",
            &pod.name,
        ]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "veth-node"]);
        node.ip(&["link", "set", "veth-node", "up"]);
        // Service addresses live on the node's loopback (this kernel has no dummy driver).
        node.ip(&["addr", "add", &format!("{SVC_IP}/32"), "dev", "lo"]);
        node.ip(&["addr", "add", &format!("{OTHER_IP}/32"), "dev", "lo"]);
        pod.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "veth-pod"]);
        pod.ip(&["link", "set", "veth-pod", "up"]);
        pod.ip(&["route", "add", "default", "via", NODE_IP]);
        Self { node, pod }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// A child cgroup under the cgroup2 mount, removed on drop (after its processes are gone).
pub struct Cgroup {
    /// Path relative to the cgroup2 mount, starting with `/`.
    pub rel: String,
    pub dir: PathBuf,
}

impl Cgroup {
    pub fn new(rel: &str) -> Self {
        let root = cgroup2_root().unwrap_or_else(|| panic!("no cgroup2 mount"));
        let dir = root.join(rel.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { rel: rel.to_string(), dir }
    }

    pub fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "warning: could not remove cgroup {} (processes left: {:?})",
            self.dir.display(),
            self.procs()
        );
    }
}

/// A test's own cgroup `/ngtest…` with an `enrolled` child: the usual shape of a transparent
/// test. Fields drop child first.
pub struct TestCgroups {
    pub enrolled: Cgroup,
    pub parent: Cgroup,
}

impl TestCgroups {
    pub fn new() -> Self {
        let parent = Cgroup::new(&format!("/{}", unique("ngtest")));
        let enrolled = Cgroup::new(&format!("{}/enrolled", parent.rel));
        Self { enrolled, parent }
    }

    /// Path of the test's parent cgroup (`/ngtest…`), for configs.
    pub fn base(&self) -> &str {
        &self.parent.rel
    }
}

impl Default for TestCgroups {
    fn default() -> Self {
        Self::new()
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `cmd` inside `netns` (if any) and `cgroup` (if any); killed on drop.
pub fn spawn(
    cmd: &Path,
    args: &[&str],
    netns: Option<&Netns>,
    cgroup: Option<&Cgroup>,
    stdout: Stdio,
    stderr: Stdio,
) -> Proc {
    let child = spawn_child(cmd, args, netns, cgroup, stdout, stderr);
    Proc { child, what: format!("{} {}", cmd.display(), args.join(" ")) }
}

/// As [`spawn`], for processes the caller waits for.
pub fn spawn_child(
    cmd: &Path,
    args: &[&str],
    netns: Option<&Netns>,
    cgroup: Option<&Cgroup>,
    stdout: Stdio,
    stderr: Stdio,
) -> Child {
    use std::os::unix::process::CommandExt;
    let ns_path = netns.map(|n| CString::new(format!("/run/netns/{}", n.name)).unwrap_or_default());
    let procs =
        cgroup.map(|c| CString::new(c.dir.join("cgroup.procs").display().to_string()).unwrap_or_default());
    let mut c = Command::new(cmd);
    c.args(args).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // SAFETY: only async-signal-safe calls (open, setns, write, close) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if let Some(p) = &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            if let Some(p) = &ns_path {
                let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
                if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    c.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", cmd.display()))
}

/// Runs `ng-probe ARGS` to completion and parses its JSON line.
pub fn probe(args: &[&str], netns: Option<&Netns>, cgroup: Option<&Cgroup>) -> Value {
    let child = spawn_child(&probe_bin(), args, netns, cgroup, Stdio::piped(), Stdio::piped());
    let out = match child.wait_with_output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        Err(e) => format!("wait failed: {e}"),
    };
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("ng-probe {args:?} printed {out:?}: {e}"))
}

/// A plain GET through ng-probe; returns its JSON.
pub fn get(addr: &str, path: &str, netns: Option<&Netns>, cgroup: Option<&Cgroup>) -> Value {
    probe(&["get", addr, path], netns, cgroup)
}

/// The upstream fixture server, in `netns`, on 0.0.0.0:UPSTREAM_PORT.
pub fn upstream(netns: &Netns, name: &str) -> Proc {
    let p = spawn(
        &probe_bin(),
        &["serve", &format!("0.0.0.0:{UPSTREAM_PORT}"), name],
        Some(netns),
        None,
        Stdio::null(),
        Stdio::inherit(),
    );
    wait_until(Duration::from_secs(5), "upstream listening", || {
        let v = probe(&["get", &format!("{SVC_IP}:{UPSTREAM_PORT}"), "/ping"], Some(netns), None);
        v["ok"] == true
    });
    p
}

/// Polls `f` until true or panics after `limit` naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running nodegate with its own directory (config, audit log, stderr log) and pin path.
pub struct Gateway {
    pub proc: Proc,
    pub dir: PathBuf,
    pub pin: PathBuf,
    pub config: PathBuf,
    pub audit: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// A fresh directory and pin path; `config_yaml` may use `{PIN}`, `{AUDIT}`.
    pub fn prepare(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(unique(&format!("nodegate-{tag}-")));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let pin = PathBuf::from("/sys/fs/bpf").join(unique("ngtest"));
        (dir, pin)
    }

    pub fn start(
        dir: &Path,
        pin: &Path,
        config_yaml: &str,
        netns: Option<&Netns>,
        cgroup: Option<&Cgroup>,
    ) -> Self {
        let config = dir.join("nodegate.yaml");
        let audit = dir.join("audit.log");
        let yaml = config_yaml
            .replace("{PIN}", &pin.display().to_string())
            .replace("{AUDIT}", &audit.display().to_string());
        fs::write(&config, yaml).unwrap_or_else(|e| panic!("write config: {e}"));
        let log = dir.join(format!("nodegate-{}.log", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let logf = fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let errf = logf.try_clone().unwrap_or_else(|e| panic!("dup log: {e}"));
        let cfg_s = config.display().to_string();
        let mut proc = spawn(
            &nodegate_bin(),
            &["run", "--config", &cfg_s],
            netns,
            cgroup,
            Stdio::from(logf),
            Stdio::from(errf),
        );
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains("nodegate ready") {
                break;
            }
            if !proc.is_running() || start.elapsed() > Duration::from_secs(20) {
                let running = proc.is_running();
                // No Gateway exists yet to clean up on drop: do it here.
                proc.kill9();
                let _ = Command::new(nodegate_bin())
                    .args(["intercept", "cleanup", "--pin-path", &pin.display().to_string()])
                    .output();
                panic!("nodegate did not become ready (running: {running}); its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { proc, dir: dir.to_path_buf(), pin: pin.to_path_buf(), config, audit, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Audit records written so far.
    pub fn audit_lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an audit record matching `pred` (the writer flushes on an interval).
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(Duration::from_secs(10), what, || {
            found = self.audit_lines().into_iter().find(|v| pred(v));
            found.is_some()
        });
        found.unwrap_or(Value::Null)
    }

    /// `nodegate intercept status --json` for this gateway's pin path.
    pub fn status(&self) -> Value {
        let out = Command::new(nodegate_bin())
            .args(["intercept", "status", "--json", "--pin-path", &self.pin.display().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("run status: {e}"));
        assert!(out.status.success(), "intercept status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}"))
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.status()["counters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c[0] == name)
            .and_then(|c| c[1].as_u64())
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.proc.pid() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.proc.is_running() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "nodegate did not stop within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.proc.kill9();
        let _ = Command::new(nodegate_bin())
            .args(["intercept", "cleanup", "--pin-path", &self.pin.display().to_string()])
            .output();
        if std::thread::panicking() {
            eprintln!("--- nodegate log ({}) ---\n{}", self.log.display(), self.log_text());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The repository's root (for tests/python and deploy/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `llm-sim ADDR NAME OPTS...` in `netns` and waits until it answers.
pub fn llm_sim(netns: &Netns, addr: &str, name: &str, opts: &[&str]) -> Proc {
    let bin = bin_dir().join("llm-sim");
    assert!(bin.exists(), "{} is missing: build it first (`cargo build --bins`)", bin.display());
    let mut args = vec![addr, name];
    args.extend_from_slice(opts);
    let p = spawn(&bin, &args, Some(netns), None, Stdio::null(), Stdio::inherit());
    wait_until(Duration::from_secs(5), "llm-sim listening", || {
        get(addr, "/sim/count", Some(netns), None)["ok"] == true
    });
    p
}

/// Runs a scenario of tests/python/llm_clients.py (the official OpenAI and Anthropic SDKs).
pub fn sdk(
    scenario: &str,
    base: &str,
    key: &str,
    model: &str,
    netns: Option<&Netns>,
    cgroup: Option<&Cgroup>,
) -> Value {
    let script = repo_root().join("tests/python/llm_clients.py");
    let script = script.display().to_string();
    let child = spawn_child(
        Path::new("python3"),
        &[&script, scenario, base, key, model],
        netns,
        cgroup,
        Stdio::piped(),
        Stdio::piped(),
    );
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the openai/anthropic SDKs are not installed (pip install openai anthropic; .ci/run does): {stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{scenario} printed {stdout:?} ({e}); stderr: {stderr}"))
}

/// A fresh scratch directory under the temp dir, named after `prefix`.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// One of the workspace's simulators (`mcp-sim`, `a2a-sim`, `vllm-sim`, ...) in `ns`, quiet;
/// killed on drop.
pub fn sim(ns: &Netns, bin: &str, args: &[&str]) -> Proc {
    spawn(&bin_dir().join(bin), args, Some(ns), None, Stdio::null(), Stdio::null())
}

/// The sum of the series of metric `name` in Prometheus text `metrics` whose line contains
/// every one of `with` (label pairs as they are written).
pub fn metric_sum(metrics: &str, name: &str, with: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `curl` GETting `url` through the explicit proxy at `proxy` from inside `ns`, with `headers`:
/// the status code curl printed (`000` when there was no answer).
pub fn curl_via_proxy(ns: &Netns, proxy: &str, url: &str, headers: &[&str]) -> String {
    let proxy = format!("http://{proxy}");
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy.as_str()];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.push(url);
    let out = spawn_child(Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::null())
        .wait_with_output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `curl` POSTing JSON `body` to `url` from inside `ns` (and `cgroup`): (HTTP status, body as
/// JSON or Null).
pub fn post_json_status(ns: &Netns, cgroup: Option<&Cgroup>, url: &str, body: &str) -> (u16, Value) {
    let args = [
        "-s",
        "-m",
        "20",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "--data-binary",
        body,
        url,
    ];
    let child = spawn_child(Path::new("curl"), &args, Some(ns), cgroup, Stdio::piped(), Stdio::null());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A redis-server on 127.0.0.1:`port` inside `ns` (no persistence), answering PING.
pub fn redis_server(ns: &Netns, port: u16) -> Proc {
    let bin = Path::new("/usr/bin/redis-server");
    assert!(bin.exists(), "redis-server is not installed (apt-get install redis-server; .ci/run does)");
    let port_s = port.to_string();
    let p = spawn(
        bin,
        &["--port", &port_s, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        Some(ns),
        None,
        Stdio::null(),
        Stdio::null(),
    );
    wait_until(Duration::from_secs(5), "redis to answer PING", || {
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "redis-cli", "-p", &port_s, "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    });
    p
}

/// `curl` POSTing JSON `body` to `url` from inside `ns`, in the background (killed on drop).
pub fn post_json_spawn(ns: &Netns, url: &str, body: &str, timeout_secs: u32) -> Proc {
    let t = timeout_secs.to_string();
    let args = ["-s", "-m", &t, "-H", "content-type: application/json", "--data-binary", body, url];
    spawn(Path::new("curl"), &args, Some(ns), None, Stdio::null(), Stdio::null())
}

/// `curl` POSTing JSON `body` to `url` from inside `ns`: the response parsed as JSON (Null if not).
pub fn post_json(ns: &Netns, url: &str, body: &str) -> Value {
    let args = ["-s", "-m", "30", "-H", "content-type: application/json", "--data-binary", body, url];
    let child = spawn_child(Path::new("curl"), &args, Some(ns), None, Stdio::piped(), Stdio::null());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("curl: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}
