//! The deployment files as users run them: `docker-compose.yml` follows the
//! Compose specification, every service's command and environment are
//! settings `docproc` accepts, the pools cover every job type, the
//! `Dockerfile` passes hadolint, and the whole stack — broker, web and
//! worker containers from an image of the binary under test — processes
//! uploads under podman-compose.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A path from the environment; `None` outside CI when it is not set.
fn env_path(var: &str, why: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {var} is not ({why}; make test sets it)"
            );
            eprintln!("skipped: {var} is not set ({why})");
            None
        }
    }
}

/// The compose file, checked against the spec and read with anchors
/// resolved.
fn compose_file() -> Option<Value> {
    let schema = env_path("DOCPROC_COMPOSE_SCHEMA", "the Compose spec's JSON schema")?;
    let python = env_path("DOCPROC_ORACLE_PYTHON", "Python with jsonschema and PyYAML")?;
    let out = Command::new(python)
        .arg(repo("scripts/compose-check.py"))
        .arg(schema)
        .arg(repo("docker-compose.yml"))
        .output()
        .expect("run compose-check.py");
    assert!(
        out.status.success(),
        "docker-compose.yml breaks the Compose spec:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("compose-check.py prints JSON"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in a command line.
fn flag<'a>(cmd: &'a [String], name: &str) -> Option<&'a str> {
    cmd.iter()
        .position(|a| a == name)
        .and_then(|i| cmd.get(i + 1))
        .map(String::as_str)
}

#[test]
fn the_compose_file_follows_the_spec_and_docproc_accepts_every_service() {
    let Some(doc) = compose_file() else { return };
    let services = doc["services"].as_object().expect("services");
    let mut job_types = BTreeSet::new();
    for (name, svc) in services {
        let cmd = strings(&svc["command"]);
        let env = svc["environment"]
            .as_object()
            .expect("environment as a map");
        // The command with its environment is accepted as it stands.
        let mut run = Command::new(env!("CARGO_BIN_EXE_docproc"));
        run.args(&cmd).arg("--print-config").env_clear();
        for (k, v) in env {
            run.env(k, v.as_str().expect("environment values are strings"));
        }
        let out = run.output().expect("run docproc --print-config");
        assert!(
            out.status.success(),
            "{name}: docproc {cmd:?} refuses its settings: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Its health check asks the binary, on a port the service listens on.
        let test: Vec<&str> = svc["healthcheck"]["test"]
            .as_str()
            .expect("health check in the shell form")
            .split_whitespace()
            .collect();
        assert_eq!(test[..2], ["docproc", "health"], "{name}: {test:?}");
        let probe = url::Url::parse(test[2]).expect("health URL");
        let port = probe.port().expect("health URL port").to_string();
        let listens = ["--listen", "--metrics-listen"]
            .iter()
            .filter_map(|f| flag(&cmd, f))
            .any(|addr| addr.rsplit(':').next() == Some(&port));
        assert!(
            listens,
            "{name}: the health check probes port {port}, which {cmd:?} does not listen on"
        );
        // Job processes see the uploads and results the web process keeps.
        if cmd[0] != "broker" {
            assert!(
                strings(&svc["volumes"]).contains(&"files:/data".to_string()),
                "{name} does not mount the shared file volume"
            );
            assert_eq!(env["DOCPROC_QUEUE"], "grpc://broker:7070", "{name}");
            let types = flag(&cmd, "--job-types").expect("each job process names its pools");
            job_types.extend(types.split(',').map(String::from));
        }
    }
    let all: BTreeSet<String> = ["ai", "email", "excel", "pdf", "webhook"]
        .map(String::from)
        .into();
    assert_eq!(job_types, all, "every job type has a pool in some service");
}

/// The Dockerfile passes hadolint with its default rules (it cannot be
/// built here: its base images come from a registry). Where it turns a
/// rule off (DL3008, apt versions), the Dockerfile says why.
#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = env_path("DOCPROC_HADOLINT", "hadolint, the Dockerfile linter") else {
        return;
    };
    let out = Command::new(hadolint)
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(repo("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command, panicking with its output when it fails.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A compose project of the test, taken down with its volumes and image
/// when dropped.
struct Stack {
    project: String,
    image: String,
    conf: tempfile::TempDir,
    port: u16,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman-compose");
        c.arg("-f")
            .arg(repo("docker-compose.yml"))
            .args(["-p", &self.project])
            .args(args)
            .env("CONTAINERS_CONF", self.conf.path().join("containers.conf"))
            .env("DOCPROC_IMAGE", &self.image)
            .env("DOCPROC_HTTP_PORT", self.port.to_string());
        c
    }

    fn podman(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }

    /// The names of the project's running containers.
    fn containers(&self) -> Vec<String> {
        let out = run_ok(self.podman().args([
            "ps",
            "--filter",
            &format!("label=io.podman.compose.project={}", self.project),
            "--format",
            "{{.Names}}",
        ]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    fn logs(&self) -> String {
        self.containers()
            .iter()
            .map(|c| {
                let out = self.podman().args(["logs", "--tail", "30", c]).output();
                let text = out.map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                });
                format!("== {c}\n{}", text.unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "5"]).output();
        let _ = self.podman().args(["rmi", "-f", &self.image]).output();
    }
}

/// Engine settings this machine needs (no systemd, cgroups v1 and v2
/// mixed, a capped process count): runc, cgroupfs, file events, limits no
/// higher than the host's.
const CONTAINERS_CONF: &str = r#"[containers]
default_ulimits = ["nofile=4096:4096", "nproc=1000:1000"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_processes_uploads_under_podman() {
    if !(have("podman") && have("podman-compose")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but podman / podman-compose are missing (make test installs them)"
        );
        eprintln!("skipped: podman and podman-compose are not installed");
        return;
    }
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("containers.conf"), CONTAINERS_CONF).unwrap();
    let id = format!("{}-{:04x}", std::process::id(), rand::random::<u16>());
    let stack = Stack {
        project: format!("docproctest{}", id.replace('-', "")),
        image: format!("localhost/docproc-test:{id}"),
        conf,
        port: common::free_port(),
    };
    run_ok(
        Command::new(repo("scripts/local-image.sh"))
            .arg(env!("CARGO_BIN_EXE_docproc"))
            .arg(&stack.image)
            .env("CONTAINERS_CONF", stack.conf.path().join("containers.conf")),
    );
    run_ok(&mut stack.compose(&["up", "-d", "--no-build"]));

    // The web process answers ready once it reaches the broker.
    let addr: SocketAddr = ([127, 0, 0, 1], stack.port).into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = common::try_request(addr, "GET", "/readyz", &[], None).await;
        if ready.is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stack did not become ready in 120 s:\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let running = stack.containers();
    let count = |svc: &str| running.iter().filter(|n| n.contains(svc)).count();
    assert_eq!(count("broker"), 1, "{running:?}");
    assert_eq!(count("web"), 1, "{running:?}");
    assert_eq!(count("worker-excel"), 1, "{running:?}");
    assert_eq!(count("worker-pdf"), 2, "replicas: 2 {running:?}");

    // A spreadsheet and a PDF go through the workers' containers.
    let sheet = common::submit_to(addr, "sales.xlsx", &common::xlsx(), &[]).await;
    let pdf = common::submit_to(
        addr,
        "memo.pdf",
        &common::pdf(&["Quarterly memo from the container"]),
        &[],
    )
    .await;
    for id in [&sheet, &pdf] {
        common::wait_for(addr, id, "completed", 120).await;
    }
    let result = common::request(addr, "GET", &format!("/api/job/{sheet}/result"), None).await;
    assert_eq!(result.status, 200, "{}", result.text());
    assert!(result.text().contains("North"), "{}", result.text());
    let result = common::request(addr, "GET", &format!("/api/job/{pdf}/markdown"), None).await;
    assert_eq!(result.status, 200, "{}", result.text());
    assert!(
        result.text().contains("Quarterly memo from the container"),
        "{}",
        result.text()
    );

    // Each container reports healthy by its own health command.
    for c in &running {
        let out = stack
            .podman()
            .args(["healthcheck", "run", c])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c} is not healthy: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A stop is a SIGTERM to each docproc (PID 1 of its container): every
    // one drains and exits 0 within the grace, none is killed.
    run_ok(&mut stack.compose(&["stop", "-t", "60"]));
    let out = run_ok(stack.podman().args([
        "ps",
        "--all",
        "--filter",
        &format!("label=io.podman.compose.project={}", stack.project),
        "--format",
        "{{.Names}} {{.ExitCode}}",
    ]));
    let exits = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(exits.lines().count(), 5, "{exits}");
    for line in exits.lines() {
        assert!(
            line.ends_with(" 0"),
            "not a clean stop: {line}\n{}",
            stack.logs()
        );
    }
}
