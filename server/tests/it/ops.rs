//! Operating the binary: `/metrics` moving as jobs run, the command-line
//! client (`submit --wait`, `status`, `stats`, `dead`), configuration
//! precedence and errors of the real `docproc` binary, and refusing a
//! public address without keys.

use crate::common;

use std::collections::HashMap;
use std::process::Command;

use common::TestServer;

/// `name{labels} value` lines of a scrape, keyed by `name{labels}`.
fn scrape_values(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(s: &TestServer) -> HashMap<String, f64> {
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    scrape_values(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_present_and_move_as_jobs_run() {
    let s = TestServer::start(|c| c.max_retries = 0).await;
    let before = scrape(&s).await;
    assert_eq!(before["docproc_up"], 1.0);
    assert_eq!(
        before["docproc_workers{job_type=\"excel_processing\"}"],
        2.0
    );
    let ex = "docproc_jobs_total{job_type=\"excel_processing\",event=\"completed\"}";
    let done_before = before.get(ex).copied().unwrap_or(0.0);
    let id = s.submit("a.csv", b"region,total\nnorth,1\n", &[]).await;
    s.wait(&id, "completed", 60).await;
    let bad = s.submit("bomb.xlsx", &common::zip_bomb(), &[]).await;
    s.wait(&bad, "failed", 60).await;
    let after = scrape(&s).await;
    assert!(after[ex] >= done_before + 1.0, "completed counter moved");
    assert!(after["docproc_jobs_total{job_type=\"excel_processing\",event=\"produced\"}"] >= 2.0);
    assert!(after["docproc_jobs_total{job_type=\"excel_processing\",event=\"failed\"}"] >= 1.0);
    assert!(after["docproc_job_duration_seconds_count{job_type=\"excel_processing\"}"] >= 1.0);
    assert!(after["docproc_job_queue_wait_seconds_count{job_type=\"excel_processing\"}"] >= 1.0);
    assert!(
        after["docproc_http_requests_total{route=\"/api/upload-async\",method=\"POST\",status=\"202\"}"] >= 2.0
    );
    assert!(
        after["docproc_http_request_duration_seconds_count{route=\"/api/job/{id}/status\"}"] >= 1.0
    );
    assert!(
        after["docproc_broker_fsync_seconds_count"] > before["docproc_broker_fsync_seconds_count"]
    );
    assert!(after.contains_key("docproc_queue_depth{job_type=\"excel_processing\",priority=\"normal\",state=\"queued\"}"), "{after:?}");
    assert!(after.contains_key("docproc_worker_utilisation{job_type=\"pdf_processing\"}"));
    assert!(after.contains_key("docproc_webhook_deliveries_total{outcome=\"delivered\"}"));
}

fn docproc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docproc"));
    // The test's own environment must not leak settings in.
    for (k, _) in std::env::vars() {
        if k.starts_with("DOCPROC_")
            || [
                "QUEUE_TYPE",
                "EXCEL_WORKERS",
                "PDF_WORKERS",
                "AI_WORKERS",
                "REDIS_HOST",
                "REDIS_PORT",
                "REDIS_PASSWORD",
                "KAFKA_BOOTSTRAP_SERVERS",
                "RUST_LOG",
            ]
            .contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_follows_a_job_to_its_result() {
    let s = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.csv");
    std::fs::write(&file, "region,total\nnorth,12.5\nsouth,7\n").unwrap();
    let server = format!("http://{}", s.addr);
    let out = tokio::task::spawn_blocking(move || {
        docproc()
            .args([
                "submit",
                "--wait",
                "--priority",
                "high",
                "--server",
                &server,
            ])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    assert!(stdout.contains(": completed"), "{stdout}");
    let id = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("job ")?
                .split(':')
                .next()
                .map(str::to_string)
        })
        .expect("job id printed");
    assert!(
        stdout.contains(&format!("/api/job/{id}/result")),
        "{stdout}"
    );
    assert!(
        stderr.contains("100% completed"),
        "progress shown: {stderr}"
    );
    // The job really is there, with the priority asked for, and its result.
    let st = s.get(&format!("/api/job/{id}/status")).await.json();
    assert_eq!(st["status"], "completed");
    assert_eq!(st["priority"], "high");
    assert_eq!(s.get(&format!("/api/job/{id}/result")).await.status, 200);

    // status, stats and dead against the same server.
    let server = format!("http://{}", s.addr);
    let run = |args: Vec<String>| {
        let out = docproc().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let sv = server.clone();
    let idc = id.clone();
    let (status, stats, dead) = tokio::task::spawn_blocking(move || {
        (
            run(vec!["status".into(), idc, "--server".into(), sv.clone()]),
            run(vec!["stats".into(), "--server".into(), sv.clone()]),
            run(vec!["dead".into(), "--server".into(), sv]),
        )
    })
    .await
    .unwrap();
    assert!(
        status.contains("completed") && status.contains("excel_processing"),
        "{status}"
    );
    assert!(stats.contains("excel_processing"), "{stats}");
    assert!(dead.contains("no failed jobs"), "{dead}");
    // A job that does not exist: a clear error, a failing exit code.
    let out = docproc()
        .args(["status", "nope", "--server", &server])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

#[test]
fn configuration_layers_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("docproc.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"/srv/docproc\"\n[workers]\nexcel = 3\npdf = 4\nai = 5\n[auth]\nkeys = []\n",
    )
    .unwrap();
    let out = docproc()
        .args(["serve", "--print-config", "--config"])
        .arg(&cfg)
        .args(["--excel-workers", "7"])
        .env("PDF_WORKERS", "6")
        .env("DOCPROC_SMTP_URL", "smtp://user:hunter2@mail:25")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("workers.excel = \"7\"  # flag --excel-workers"),
        "{text}"
    );
    assert!(
        text.contains("workers.pdf = \"6\"  # environment variable PDF_WORKERS"),
        "{text}"
    );
    assert!(text.contains("workers.ai = \"5\"  # file"), "{text}");
    assert!(
        text.contains("data_dir = \"/srv/docproc\"  # file"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "secrets are not printed: {text}");
    assert!(text.contains("smtp.url = \"<secret>\""), "{text}");
}

#[test]
fn a_bad_setting_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    /// Flags, environment, what the error must mention.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], vec![("EXCEL_WORKERS", "lots")], "workers.excel"),
        (vec!["--job-timeout-secs", "0"], vec![], "jobs.timeout_secs"),
        (vec![], vec![("QUEUE_TYPE", "pigeon")], "QUEUE_TYPE"),
        (vec!["--listen", "0.0.0.0:0"], vec![], "--insecure"),
        (
            vec![],
            vec![("DOCPROC_API_KEYS", "ci:boss:sha256:00")],
            "auth.keys",
        ),
    ];
    for (flags, env, want) in cases {
        let out = docproc()
            .arg("serve")
            .args(&flags)
            .arg("--data-dir")
            .arg(dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} {env:?} started");
        assert!(err.contains(want), "{flags:?} {env:?}: {err}");
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[workers]\nexcell = 1\n").unwrap();
    let out = docproc()
        .args(["worker", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting `workers.excell`"));
}

#[test]
fn json_logs_carry_fields() {
    let dir = tempfile::tempdir().unwrap();
    // A broker without keys warns, then cannot bind an address that is
    // not this host's (TEST-NET-1) and exits.
    let out = docproc()
        .args([
            "broker",
            "--log-json",
            "--insecure",
            "--listen",
            "192.0.2.1:7070",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON log line");
    let v: serde_json::Value = serde_json::from_str(first).expect(first);
    assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
}

#[test]
fn key_new_prints_a_key_and_its_entry() {
    let out = docproc()
        .args(["key", "new", "--name", "ci", "--scope", "worker"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .unwrap()
        .trim();
    let entry = text
        .lines()
        .find_map(|l| l.strip_prefix("entry:"))
        .unwrap()
        .trim();
    let keys = docproc_broker::auth::Keys::parse(&[entry.to_string()]).unwrap();
    assert_eq!(keys.verify(key).unwrap().name, "ci");
    assert!(!entry.contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_listed_retried_and_deleted() {
    let tools = tempfile::tempdir().unwrap();
    let mark = tools.path().join("failed-once");
    let extractor = common::script(
        tools.path(),
        &format!(
            "if [ ! -f {m} ]; then touch {m}; echo 'extractor unavailable' >&2; exit 4; fi\nexec {exe} \"$@\"",
            m = mark.display(),
            exe = env!("CARGO_BIN_EXE_docproc"),
        ),
    );
    let s = TestServer::start(move |c| {
        c.max_retries = 0;
        c.extractor = Some(extractor);
    })
    .await;
    let flaky = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&flaky, "failed", 30).await;
    let bomb = s.submit("bomb.xlsx", &common::zip_bomb(), &[]).await;
    s.wait(&bomb, "failed", 30).await;
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let dead = s.get("/api/dead").await.json();
    let listed = ids(&dead);
    assert!(listed.contains(&flaky) && listed.contains(&bomb), "{dead}");
    // A retry is a new job on the same upload; the original links to it.
    let r = common::request(s.addr, "POST", &format!("/api/dead/{flaky}/retry"), None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let again = r.json()["job_id"].as_str().unwrap().to_string();
    assert_ne!(again, flaky);
    s.wait(&again, "completed", 30).await;
    let dead = s.get("/api/dead").await.json();
    let row = dead["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == flaky.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["retried_as"], again.as_str());
    // A permanently failed job's file is gone: 410.
    common::request(s.addr, "POST", &format!("/api/dead/{bomb}/retry"), None)
        .await
        .assert_error(410, "upload_gone");
    // Only failed jobs are dead.
    common::request(s.addr, "POST", &format!("/api/dead/{again}/retry"), None)
        .await
        .assert_error(409, "not_dead");
    // Delete takes it off the list.
    let d = common::request(s.addr, "DELETE", &format!("/api/dead/{bomb}"), None).await;
    assert_eq!(d.status, 200, "{}", d.text());
    let dead = s.get("/api/dead").await.json();
    assert!(dead["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["job_id"] != bomb.as_str()));
    // Pages skip deleted jobs and stay full: the newest dead job (bomb)
    // is deleted, so a page of one holds flaky, and nothing follows it.
    let page = s.get("/api/dead?limit=1").await.json();
    assert_eq!(ids(&page), vec![flaky.clone()], "{page}");
    assert_eq!(page["next_cursor"], serde_json::Value::Null, "{page}");
    common::request(s.addr, "DELETE", &format!("/api/dead/{bomb}"), None)
        .await
        .assert_error(409, "not_dead");

    // The same through the command-line client.
    let server = format!("http://{}", s.addr);
    let listed = tokio::task::spawn_blocking({
        let server = server.clone();
        move || {
            docproc()
                .args(["dead", "--server", &server])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.status.success());
    assert!(
        text.contains(&flaky) && text.contains(&format!("retried as {again}")),
        "{text}"
    );
    assert!(!text.contains(&bomb), "deleted jobs are not listed: {text}");
    let cli = |args: Vec<String>| {
        let server = server.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                docproc()
                    .args(&args)
                    .args(["--server", &server])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    // Its retry completed and took the file with it: a second retry is refused.
    let again_dead = cli(vec!["dead".into(), "--retry".into(), flaky.clone()]).await;
    assert!(!again_dead.status.success());
    assert!(String::from_utf8_lossy(&again_dead.stderr).contains("upload_gone"));
    let deleted = cli(vec!["dead".into(), "--delete".into(), flaky.clone()]).await;
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout).trim(),
        format!("job {flaky} deleted")
    );
    let listed = cli(vec!["dead".into()]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("no failed jobs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_covers_the_api_and_its_page_is_self_contained() {
    let s = TestServer::start(|c| c.pools = common::no_local_workers()).await;
    let spec = s.get("/api/openapi.json").await.json();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().unwrap();
    let want = [
        ("/api/upload-async", "post"),
        ("/api/job/{id}/status", "get"),
        ("/api/job/{id}/result", "get"),
        ("/api/job/{id}/html", "get"),
        ("/api/job/{id}/markdown", "get"),
        ("/api/job/{id}", "delete"),
        ("/api/jobs", "get"),
        ("/api/ws", "get"),
        ("/api/dead", "get"),
        ("/api/dead/{id}/retry", "post"),
        ("/api/dead/{id}", "delete"),
        ("/api/queue/stats", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in want {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} is described");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
        // Every described route exists (a bad id gives 4xx, never the 404 `no such route`).
        let concrete = path.replace("{id}", "1");
        let r = common::request(s.addr, &method.to_uppercase(), &concrete, None).await;
        assert!(
            !(r.status == 404 && r.text().contains("no such route")),
            "{method} {path} is not routed"
        );
    }
    assert_eq!(
        paths.len(),
        want.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // The status body's schema is the type the handler serializes.
    let job = &spec["components"]["schemas"]["JobView"]["properties"];
    for field in [
        "job_id",
        "status",
        "attempts",
        "created_at",
        "correlation_id",
    ] {
        assert!(job[field].is_object(), "JobView.{field}");
    }
    let upload =
        &paths["/api/upload-async"]["post"]["requestBody"]["content"]["multipart/form-data"];
    assert!(upload.is_object(), "the upload is multipart");
    assert!(spec["components"]["securitySchemes"]["api_key"]["scheme"] == "bearer");
    assert_eq!(
        paths["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );
    // The reference page loads only from this server.
    for page in [
        "/api/docs",
        "/api/docs/docs.js",
        "/ui",
        "/ui/app.js",
        "/ui/app.css",
    ] {
        let r = s.get(page).await;
        assert_eq!(r.status, 200, "{page}");
        let t = r.text();
        assert!(
            !t.contains("http://") && !t.contains("https://") && !t.contains("//cdn"),
            "{page} refers elsewhere"
        );
        assert!(r
            .header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_broker_serves_metrics_behind_its_keys() {
    let (key, entry) =
        docproc_broker::auth::generate("prom", docproc_broker::auth::Scope::Read).unwrap();
    let (wkey, wentry) =
        docproc_broker::auth::generate("w", docproc_broker::auth::Scope::Worker).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let keys = format!("{},{}", entry.entry(), wentry.entry());
    let metrics_addr = format!("127.0.0.1:{port}");
    let b = common::broker_process(
        dir.path(),
        &["--api-keys", &keys, "--metrics-listen", &metrics_addr],
    );
    let url = b.url.replacen("grpc://", &format!("grpc://{wkey}@"), 1);
    let c = docproc_client::Client::connect(&url).await.unwrap();
    c.produce(vec![docproc_client::NewMessage::new(
        "pdf_processing",
        b"x".to_vec(),
    )])
    .await
    .unwrap();
    let addr: std::net::SocketAddr = metrics_addr.parse().unwrap();
    let refused = common::request(addr, "GET", "/metrics", None).await;
    assert_eq!(refused.status, 401);
    let r = common::request_with(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {key}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = scrape_values(&r.text());
    assert!(m["docproc_broker_fsync_seconds_count"] >= 1.0, "{m:?}");
    assert_eq!(
        m["docproc_queue_depth{job_type=\"pdf_processing\",priority=\"low\",state=\"queued\"}"],
        1.0,
        "{m:?}"
    );
    assert_eq!(
        m["docproc_jobs_total{job_type=\"pdf_processing\",event=\"produced\"}"],
        1.0
    );
    // The job waits: its age is there for an autoscaler, and small.
    let age = m["docproc_queue_oldest_age_seconds{job_type=\"pdf_processing\"}"];
    assert!((0.0..60.0).contains(&age), "{m:?}");
    // The container health probe asks the broker's gRPC health service
    // (no key needed).
    let probe = tokio::process::Command::from(docproc())
        .args(["health", &b.url])
        .output()
        .await
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_exits_zero_only_when_the_server_serves() {
    let s = TestServer::start(|_| {}).await;
    let health = |url: String| async move {
        tokio::process::Command::from(docproc())
            .args(["health", &url, "--timeout-secs", "3"])
            .output()
            .await
            .unwrap()
    };
    let ok = health(format!("http://{}/readyz", s.addr)).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = health(format!("http://{}", s.addr)).await;
    assert!(ok.status.success(), "the path defaults to /healthz");
    let missing = health(format!("http://{}/no-such-page", s.addr)).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );
    let closed = format!("127.0.0.1:{}", common::free_port());
    for url in [
        format!("http://{closed}/healthz"),
        format!("grpc://{closed}"),
    ] {
        let down = health(url.clone()).await;
        assert!(!down.status.success(), "{url} answered healthy");
        assert!(
            String::from_utf8_lossy(&down.stderr).contains(&closed),
            "{down:?}"
        );
    }
    let bad = health("ftp://example".into()).await;
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown scheme"),
        "{bad:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_its_pools_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = common::Proc(
        docproc()
            .args([
                "worker",
                "--queue",
                "memory://",
                "--excel-workers",
                "3",
                "--excel-workers-max",
                "5",
                "--metrics-listen",
                &listen,
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        if let Some(r) = common::try_request(addr, "GET", "/metrics", &[], None).await {
            break r.text();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker's metrics never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let m = scrape_values(&text);
    assert_eq!(
        m["docproc_workers{job_type=\"excel_processing\"}"], 3.0,
        "{text}"
    );
    assert_eq!(
        m["docproc_workers_busy{job_type=\"excel_processing\"}"],
        0.0
    );
    // A scaling pool: bounds, target and decisions, for an external
    // autoscaler and for alerts.
    assert_eq!(
        m["docproc_pool_min_workers{job_type=\"excel_processing\"}"],
        3.0
    );
    assert_eq!(
        m["docproc_pool_max_workers{job_type=\"excel_processing\"}"],
        5.0
    );
    assert_eq!(
        m["docproc_pool_target_workers{job_type=\"excel_processing\"}"],
        3.0
    );
    assert_eq!(
        m["docproc_pool_scale_events_total{job_type=\"excel_processing\",direction=\"up\",reason=\"jobs_waiting\"}"],
        0.0
    );
    assert_eq!(m["docproc_up"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_starting_until_the_queue_is_open() {
    // A "broker" that takes connections and never answers: opening the
    // queue does not finish while this test looks.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.queue_url = Some(format!("grpc://{broker}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(docproc_server::serve::serve(cfg, listener, async {
        let _ = stopped.await;
    }));
    common::request(addr, "GET", "/readyz", None)
        .await
        .assert_error(503, "starting");
    common::request(addr, "GET", "/api/jobs", None)
        .await
        .assert_error(503, "starting");
    assert_eq!(
        common::request(addr, "GET", "/healthz", None).await.status,
        200
    );
    // Stopping while starting ends the server cleanly.
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("stopped in time")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

/// A client picks the method string; `/metrics` labels every method it
/// does not know `other`, so no client can add series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_counted_as_other() {
    let s = TestServer::start(|_| {}).await;
    for m in ["FOO", "BAR", "BAZ1", "GET"] {
        let _ = common::try_request(s.addr, m, "/healthz", &[], None).await;
    }
    let text = s.get("/metrics").await.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("docproc_http_requests_total{"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("method=\"other\"")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("method=\"GET\"")),
        "{lines:?}"
    );
    for bad in ["FOO", "BAR", "BAZ1"] {
        assert!(!text.contains(bad), "{bad} became a label");
    }
    s.stop().await;
}
