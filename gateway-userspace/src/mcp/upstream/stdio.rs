//! A stdio MCP server: nodegate launches it, speaks newline-delimited JSON-RPC on its
//! stdin/stdout, logs its stderr, and restarts it (with backoff) whenever it exits.
use std::{process::Stdio, sync::Arc};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::{mpsc, watch},
};

use super::channel::{Channel, handshake};
use crate::config;

/// Largest line accepted from a server; a longer one ends the process (it is misbehaving).
const MAX_LINE: usize = 16 * 1024 * 1024;

pub fn supervise(cfg: config::McpServer, ch: Arc<Channel>, stop: watch::Receiver<bool>) {
    let name = cfg.name.clone();
    let chan = ch.clone();
    super::channel::supervise(name, "stdio server", ch, stop, move || {
        let (cfg, ch) = (cfg.clone(), chan.clone());
        async move { run_once(&cfg, &ch).await }
    });
}

/// Variables a stdio server inherits from nodegate; everything else it gets is in its config.
/// nodegate's own environment holds provider keys and must never reach a tool server.
const INHERITED: [&str; 4] = ["PATH", "LANG", "TZ", "HOME"];

/// A cleared environment (plus [`INHERITED`] and the configured `env`), and the configured
/// unprivileged user.
fn confine(cmd: &mut Command, cfg: &config::McpServer) -> Result<(), String> {
    cmd.env_clear();
    for k in INHERITED {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    if let Some(user) = &cfg.user {
        let Some((uid, gid, home)) = config::lookup_user(user) else {
            return Err(format!("no user {user:?} on this host"));
        };
        // As root, the standard library also drops every supplementary group before setuid.
        cmd.uid(uid).gid(gid).env("HOME", home);
    }
    for (k, v) in &cfg.env {
        cmd.env(k, v.expose());
    }
    Ok(())
}

/// Runs the process until it exits or its streams break; returns why.
async fn run_once(cfg: &config::McpServer, ch: &Arc<Channel>) -> String {
    let mut cmd = Command::new(cfg.command.as_deref().unwrap_or_default());
    if let Err(e) = confine(&mut cmd, cfg) {
        return e;
    }
    cmd.args(&cfg.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child: Child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return format!("cannot start {:?}: {e}", cfg.command.as_deref().unwrap_or_default()),
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return "child has no pipes".into();
    };
    let name = cfg.name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::debug!(server = %name, "stderr: {l}");
        }
    });
    let (tx, mut rx) = mpsc::channel::<Value>(256);
    let writer = async {
        while let Some(m) = rx.recv().await {
            let mut line = serde_json::to_vec(&m).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = stdin.write_all(&line).await {
                return format!("writing to stdin: {e}");
            }
            if let Err(e) = stdin.flush().await {
                return format!("writing to stdin: {e}");
            }
        }
        "writer closed".to_string()
    };
    let reply = tx.clone();
    let reader = async {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
                Ok(0) => return "stdout closed".to_string(),
                Ok(n) if n > MAX_LINE => return format!("a line longer than {MAX_LINE} bytes"),
                Ok(_) => {}
                Err(e) => return format!("reading stdout: {e}"),
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(text) {
                Ok(v) => {
                    if let Some(answer) = ch.dispatch(v) {
                        let _ = reply.send(answer).await;
                    }
                }
                Err(e) => tracing::debug!(server = %cfg.name, error = %e, "stdout line is not JSON; ignored"),
            }
        }
    };
    let ready = async {
        match handshake(ch, &tx, cfg.timeout).await {
            Ok(_) => {
                ch.attach(tx.clone());
                tracing::info!(server = %cfg.name, "MCP stdio server ready");
                std::future::pending::<String>().await
            }
            Err(e) => format!("initialize: {e}"),
        }
    };
    let reason = tokio::select! {
        r = writer => r,
        r = reader => r,
        r = ready => r,
        s = child.wait() => match s {
            Ok(s) => format!("exited: {s}"),
            Err(e) => format!("wait: {e}"),
        },
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    reason
}
