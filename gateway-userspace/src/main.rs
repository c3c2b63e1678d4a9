//! The `nodegate` binary.
use std::process::ExitCode;

use clap::Parser;
use nodegate::{
    cli::{CaCommand, Cli, Command, InterceptCommand, PolicyCommand},
    config,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("nodegate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(nodegate::app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nodegate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { file } => match config::load(Some(&file)) {
            Ok(cfg)
                if let Err(e) =
                    nodegate::tls::Tls::build(&cfg, &nodegate::telemetry::metrics::Metrics::new(), None) =>
            {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
            Ok(cfg) => {
                let warnings = config::warnings(&cfg);
                for w in &warnings {
                    println!("warning: {w}");
                }
                println!("{}: ok ({} warning(s))", file.display(), warnings.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_YAML);
            ExitCode::SUCCESS
        }
        Command::Intercept { command } => intercept(command),
        Command::Pods { config, admin, json } => pods(config, admin, json),
        Command::Audit {
            config,
            path,
            workload,
            principal,
            kind,
            decision,
            since,
            until,
            tail,
            summary,
            json,
        } => {
            let filters = AuditFilters { workload, principal, kind, decision, since, until };
            audit(config, path, filters, tail, summary, json)
        }
        Command::Policy { command: PolicyCommand::Test { file, input, json } } => {
            policy_test(&file, &input, json)
        }
        Command::Ca { command: CaCommand::Init { cert, key, name, days, force } } => {
            match nodegate::tls::ca::init(&cert, &key, &name, days, force) {
                Ok(fp) => {
                    println!("wrote {} and {} (SHA-256 {fp})", cert.display(), key.display());
                    println!(
                        "point tls.ca.cert and tls.ca.key at them; clients of terminated destinations must trust {}",
                        cert.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn policy_test(file: &std::path::Path, input: &std::path::Path, json: bool) -> ExitCode {
    use nodegate::policy::offline;
    match offline::test(file, input) {
        Ok(judged) => {
            for j in &judged {
                if json {
                    println!("{}", offline::to_json(j));
                } else {
                    println!("request {}: {}", j.index, offline::describe(&j.verdict));
                }
            }
            if judged.iter().any(|j| j.verdict.denied.is_some()) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("nodegate policy test: {e}");
            ExitCode::from(2)
        }
    }
}

fn pin_dir(
    config: Option<std::path::PathBuf>,
    pin_path: Option<std::path::PathBuf>,
) -> Result<std::path::PathBuf, String> {
    if let Some(p) = pin_path {
        return Ok(p);
    }
    config::load(config.as_deref()).map(|c| c.intercept.pin_path).map_err(|e| e.to_string())
}

struct AuditFilters {
    workload: Option<String>,
    principal: Option<String>,
    kind: Option<String>,
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn audit(
    config: Option<std::path::PathBuf>,
    path: Option<std::path::PathBuf>,
    f: AuditFilters,
    tail: Option<usize>,
    summary: bool,
    json: bool,
) -> ExitCode {
    use nodegate::audit_query::{self as aq, Output, Query};
    let path = match path {
        Some(p) => p,
        None => match config::load(config.as_deref()) {
            Ok(c) if c.audit.path.is_empty() || c.audit.path == "-" => {
                eprintln!("nodegate: audit.path is {:?}: no audit file to read (give --path)", c.audit.path);
                return ExitCode::FAILURE;
            }
            Ok(c) => std::path::PathBuf::from(c.audit.path),
            Err(e) => {
                eprintln!("nodegate: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let now = std::time::SystemTime::now();
    let time = |s: Option<String>| s.map(|s| aq::parse_time(&s, now)).transpose();
    let (since, until) = match (time(f.since), time(f.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("nodegate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let q = Query {
        workload: f.workload,
        principal: f.principal,
        kind: f.kind,
        decision: f.decision,
        since,
        until,
    };
    let output = if summary {
        Output::Summary { json }
    } else if json {
        Output::Json
    } else {
        Output::Lines
    };
    match aq::run(&path, &q, tail, output, &mut std::io::stdout().lock()) {
        Ok(bad) => {
            if bad > 0 {
                eprintln!("nodegate: {bad} line(s) were not records (cut by a crash?) and were skipped");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nodegate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pods(config: Option<std::path::PathBuf>, admin: Option<std::net::SocketAddr>, json: bool) -> ExitCode {
    let cfg = match config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nodegate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = admin.unwrap_or(cfg.admin.address);
    let token = std::env::var("NODEGATE_ADMIN_TOKEN")
        .ok()
        .or_else(|| cfg.admin.token.map(|t| t.expose().to_string()));
    match nodegate::k8s::status::fetch(addr, token.as_deref()) {
        Ok(body) if json => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok(body) => match nodegate::k8s::status::table(&body) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nodegate: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("nodegate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn intercept(cmd: InterceptCommand) -> ExitCode {
    match cmd {
        InterceptCommand::Status { config, pin_path, json } => {
            let status = pin_dir(config, pin_path).and_then(|d| nodegate::intercept::status::read(&d));
            match status {
                Ok(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nodegate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        InterceptCommand::Cleanup { config, pin_path } => match pin_dir(config, pin_path) {
            Ok(d) => match nodegate::intercept::remove_pins(&d) {
                Ok(()) => {
                    println!("removed {} (programs detached, maps unpinned)", d.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nodegate: cleaning {}: {e}", d.display());
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("nodegate: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
