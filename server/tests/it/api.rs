//! The HTTP API against a real server on port 0: uploads of generated
//! xlsx, csv and pdf files processed end to end by the worker pools in
//! sandboxed extractor processes, and every error path.

use crate::common;

use common::{
    legacy, nested_pdf, ods, ods_repeat_bomb, on_remote_broker, pdf, sparse_xlsx, xlsx, zip_bomb,
    TestServer,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xlsx_upload_is_processed_to_json_and_html() {
    let s = TestServer::start(|_| {}).await;
    let r = s
        .upload("../../sales report.xlsx", &xlsx(), &[("priority", "high")])
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    let id = body["job_id"].as_str().unwrap().to_string();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["polling_url"], format!("/api/job/{id}/status"));
    assert_eq!(body["job_type"], "excel_processing");

    let st = s.wait(&id, "completed", 60).await;
    assert_eq!(st["attempts"], 1);
    assert_eq!(st["priority"], "high");
    assert!(st["processing_time"].as_f64().is_some());
    assert!(st["completed_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(st["result"]["summary"]["sheets"], 2);
    assert_eq!(st["progress"]["progress"]["unit"], "sheets");
    assert_eq!(st["progress"]["progress"]["total"], 2);
    assert_eq!(st["result"]["json_url"], format!("/api/job/{id}/result"));

    let res = s.get(&format!("/api/job/{id}/result")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let res = res.json();
    assert_eq!(
        (res["schema"].clone(), res["version"].clone()),
        (json!("docproc.spreadsheet"), json!(2))
    );
    assert_eq!(res["format"], "xlsx");
    let sales = &res["sheets"][0];
    assert_eq!(sales["name"], "Sales");
    assert_eq!(
        (sales["rows"].clone(), sales["columns"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(sales["cells"][0], json!(["Region", "Total", "Day"]));
    assert_eq!(
        sales["cells"][1],
        json!(["North", 12.5, { "date": "2024-03-01" }])
    );
    let cols = &sales["tables"][0]["columns"];
    assert_eq!(
        cols[1],
        json!({ "index": 1, "name": "Total", "type": "number", "values": 2 })
    );
    assert_eq!(cols[2]["type"], "date");
    let notes = &res["sheets"][1];
    assert_eq!(
        notes["merged"],
        json!([{ "first_row": 0, "first_column": 0, "last_row": 0, "last_column": 2 }])
    );
    assert_eq!(notes["cells"][2][0], true);

    let html = s.get(&format!("/api/job/{id}/html")).await;
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html.header("content-security-policy").is_some());
    let page = html.text();
    assert!(page.contains("<h2>Sales</h2>") && page.contains("North"));
    assert!(!page.contains("<script>"), "document text is escaped");
    assert!(page.contains("&lt;script&gt;"));

    assert_eq!(
        st["result"]["markdown_url"],
        format!("/api/job/{id}/markdown")
    );
    let md = s.get(&format!("/api/job/{id}/markdown")).await;
    assert_eq!(md.status, 200);
    assert_eq!(
        md.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    let md = md.text();
    assert!(md.starts_with("# Sales\n\n| Region | Total | Day |\n| --- | ---: | --- |\n| North | 12.5 | 2024-03-01 |\n"), "{md}");
    assert!(md.contains("\\<script>"), "document text is escaped: {md}");
    assert!(
        page.contains("sales report.xlsx"),
        "title from the client's name, path removed"
    );
    assert!(
        s.uploads().is_empty(),
        "the upload is removed once the job completes"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ods_csv_and_pdf_are_extracted_and_analysed() {
    let s = TestServer::start(|_| {}).await;
    let o = s.submit("budget", &ods(), &[]).await;
    let csv = "name;amount;zip\nÅsa;12;00123\nBo;-3.5;98765\n";
    let c = s.submit("data.txt", csv.as_bytes(), &[]).await;
    let p = s
        .submit(
            "report.bin",
            &pdf(&[
                "The invoice for the project is due on 2024-03-01.",
                "Please pay the invoice of 1200 EUR to billing@example.com today.",
            ]),
            &[("analyze", "true")],
        )
        .await;
    s.wait(&o, "completed", 60).await;
    let res = s.get(&format!("/api/job/{o}/result")).await.json();
    assert_eq!(res["format"], "ods");
    assert_eq!(res["sheets"][0]["name"], "Budget");
    assert_eq!(
        res["sheets"][0]["cells"],
        json!([["Item", "Cost"], ["Paper", 12.5]])
    );
    s.wait(&c, "completed", 60).await;
    let res = s.get(&format!("/api/job/{c}/result")).await.json();
    assert_eq!(res["format"], "csv");
    assert_eq!(res["sheets"][0]["cells"][1], json!(["Åsa", 12, "00123"]));
    assert_eq!(res["sheets"][0]["cells"][2], json!(["Bo", -3.5, 98765]));

    let st = s.wait(&p, "completed", 60).await;
    assert_eq!(st["job_type"], "pdf_processing");
    assert_eq!(st["result"]["summary"]["pages"], 2);
    let res = s.get(&format!("/api/job/{p}/result")).await.json();
    assert_eq!(res["schema"], "docproc.pdf");
    assert_eq!(res["metadata"]["title"], "Quarterly report");
    assert_eq!(res["metadata"]["author"], "Docproc Tests");
    assert_eq!(res["metadata"]["created"], "2024-03-01T12:00:00Z");
    assert_eq!(res["metadata"]["pages"], 2);
    assert!(res["pages"][0]["text"]
        .as_str()
        .unwrap()
        .contains("invoice for the project"));
    assert_eq!(res["pages"][1]["number"], 2);
    let md = s.get(&format!("/api/job/{p}/markdown")).await.text();
    assert!(
        md.starts_with("<!-- page 1 -->\n\nThe invoice for the project is due on 2024-03-01.\n\n<!-- page 2 -->\n\nPlease pay"),
        "{md}"
    );

    // The analysis job shares the upload's correlation id.
    let list = s.get("/api/jobs?job_type=ai_analysis").await.json();
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["correlation_id"], st["correlation_id"]);
    let a = jobs[0]["job_id"].as_str().unwrap().to_string();
    s.wait(&a, "completed", 60).await;
    let an = s.get(&format!("/api/job/{a}/result")).await.json();
    assert_eq!(an["schema"], "docproc.analysis");
    assert_eq!(an["language"], "en");
    assert_eq!(an["keywords"][0]["word"], "invoice");
    assert_eq!(an["entities"]["emails"], json!(["billing@example.com"]));
    assert_eq!(an["entities"]["amounts"], json!(["1200 EUR"]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xls_and_xlsb_are_extracted() {
    let s = TestServer::start(|_| {}).await;
    let xls = s.submit("old.dat", &legacy::xls(None), &[]).await;
    let xlsb = s.submit("binary", &legacy::xlsb(false), &[]).await;
    let rows = json!([
        ["Region", "Total", "Open"],
        ["North", 12.5, true],
        ["South", -3.0, false],
    ]);
    s.wait(&xls, "completed", 60).await;
    let res = s.get(&format!("/api/job/{xls}/result")).await.json();
    assert_eq!(res["format"], "xls");
    let sheet = &res["sheets"][0];
    assert_eq!(sheet["name"], "Sales");
    assert_eq!(
        sheet["cells"].as_array().unwrap()[..3],
        rows.as_array().unwrap()[..]
    );
    assert_eq!(
        sheet["cells"][3],
        json!([{ "error": "#DIV/0!" }, { "date": "2024-03-01" }, null])
    );
    assert_eq!(sheet["cells"][5], json!(["Region", null, null]));
    assert_eq!(
        sheet["merged"],
        json!([{ "first_row": 5, "first_column": 0, "last_row": 5, "last_column": 1 }])
    );
    let table = &sheet["tables"][0];
    assert_eq!(
        (&table["header_row"], &table["last_row"]),
        (&json!(0), &json!(3))
    );
    assert_eq!(table["columns"][1]["name"], "Total");
    // Two numbers and a date.
    assert_eq!(table["columns"][1]["type"], "mixed");
    assert_eq!(table["columns"][2]["type"], "bool");

    s.wait(&xlsb, "completed", 60).await;
    let res = s.get(&format!("/api/job/{xlsb}/result")).await.json();
    assert_eq!(res["format"], "xlsb");
    let sheet = &res["sheets"][0];
    assert_eq!(sheet["name"], "Sales");
    assert_eq!(sheet["rows"], 4);
    assert_eq!(
        sheet["cells"].as_array().unwrap()[..3],
        rows.as_array().unwrap()[..]
    );
    // No styles part: the date serial stays a number.
    assert_eq!(
        sheet["cells"][3],
        json!([{ "error": "#DIV/0!" }, 45352.0, null])
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    // No workers: jobs stay queued.
    let s = TestServer::start(|c| {
        c.max_upload_bytes = 64 * 1024;
        c.pools = common::no_local_workers();
    })
    .await;
    s.upload("x.bin", b"\x7fELF\x02\x01\x01\0binary", &[])
        .await
        .assert_error(415, "unsupported_type");
    s.upload("words.txt", b"plain words without any separator", &[])
        .await
        .assert_error(415, "unsupported_type");
    s.upload("big.csv", &vec![b'a'; 100 * 1024], &[])
        .await
        .assert_error(413, "too_large");
    s.upload("a.csv", b"a,b\n1,2\n", &[("priority", "asap")])
        .await
        .assert_error(400, "invalid_argument");
    s.upload("a.csv", b"a,b\n1,2\n", &[("colour", "red")])
        .await
        .assert_error(400, "invalid_argument");
    s.upload("a.csv", b"", &[])
        .await
        .assert_error(400, "invalid_argument");
    assert!(
        s.uploads().is_empty(),
        "refused uploads leave no file behind"
    );

    s.get("/api/job/999999/status")
        .await
        .assert_error(404, "not_found");
    s.get("/api/job/nope/result")
        .await
        .assert_error(404, "not_found");
    s.delete("/api/job/999999")
        .await
        .assert_error(404, "not_found");
    s.get("/api/nothing-here")
        .await
        .assert_error(404, "not_found");
    s.get("/api/jobs?status=bogus")
        .await
        .assert_error(400, "invalid_argument");
    s.get("/api/jobs?limit=0")
        .await
        .assert_error(400, "invalid_argument");
    s.get("/api/jobs?limit=abc")
        .await
        .assert_error(400, "invalid_argument");

    let id = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    assert_eq!(s.uploads().len(), 1);
    s.get(&format!("/api/job/{id}/result"))
        .await
        .assert_error(409, "not_completed");
    s.get(&format!("/api/job/{id}/html"))
        .await
        .assert_error(409, "not_completed");
    s.get(&format!("/api/job/{id}/markdown"))
        .await
        .assert_error(409, "not_completed");
    let c = s.delete(&format!("/api/job/{id}")).await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["status"], "cancelled");
    assert_eq!(
        s.get(&format!("/api/job/{id}/status")).await.json()["status"],
        "cancelled"
    );
    s.delete(&format!("/api/job/{id}"))
        .await
        .assert_error(409, "conflict");
    assert!(
        s.uploads().is_empty(),
        "a cancelled job's upload is removed"
    );

    let stats = s.get("/api/queue/stats").await.json();
    assert_eq!(stats["backend"], "rocksdb");
    let excel = stats["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["job_type"] == "excel_processing")
        .unwrap();
    assert_eq!(excel["counters"]["cancelled"], 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_fail_their_own_jobs_only() {
    let s = TestServer::start(|c| c.max_retries = 0).await;
    let bomb = s.submit("bomb.xlsx", &zip_bomb(), &[]).await;
    let nested = s.submit("nested.pdf", &nested_pdf(), &[]).await;
    let sparse = s.submit("sparse.xlsx", &sparse_xlsx(), &[]).await;
    let repeat = s.submit("repeat.ods", &ods_repeat_bomb(), &[]).await;
    let far_xlsb = s.submit("far.xlsb", &legacy::xlsb(true), &[]).await;
    // An xls whose Dimensions record claims four billion rows: calamine
    // reserves room for every cell up front and dies; the sandbox keeps it
    // to this job.
    let huge_xls = s
        .submit("huge.xls", &legacy::xls(Some(u32::MAX)), &[])
        .await;
    let good = s.submit("ok.csv", b"a,b\n1,2\n", &[]).await;
    // Two cells 17 billion cells apart: refused from the cells' extent
    // before any grid is allocated.
    let sp = s.wait(&sparse, "failed", 60).await;
    assert!(
        sp["error"].as_str().unwrap().contains("1048576 × 16384"),
        "{sp}"
    );
    let f = s.wait(&far_xlsb, "failed", 60).await;
    assert!(
        f["error"].as_str().unwrap().contains("1048576 × 16384"),
        "{f}"
    );
    let h = s.wait(&huge_xls, "failed", 60).await;
    assert!(
        h["error"].as_str().unwrap().contains("out of memory"),
        "{h}"
    );
    let r = s.wait(&repeat, "failed", 60).await;
    assert!(r["error"].as_str().unwrap().contains("limit"), "{r}");
    let b = s.wait(&bomb, "failed", 60).await;
    assert!(b["error"].as_str().unwrap().contains("zip bomb"), "{b}");
    let n = s.wait(&nested, "failed", 60).await;
    assert!(n["error"].as_str().is_some_and(|e| !e.is_empty()), "{n}");
    s.wait(&good, "completed", 60).await;
    // The server is still answering and the files of jobs that failed for
    // good are gone; only a job that failed for a passing cause (timed out
    // under load, say) keeps its file, for a retry.
    assert_eq!(s.get("/api/queue/stats").await.status, 200);
    let passing = [&sp, &f, &h, &r, &b, &n]
        .iter()
        .filter(|j| {
            let e = j["error"].as_str().unwrap_or("");
            e.starts_with("extraction timed out") || e.starts_with("extractor failed to run")
        })
        .count();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.uploads().len() != passing && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(s.uploads().len(), passing, "{:?} {n}", s.uploads());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_then_failed() {
    let s = TestServer::start(|c| {
        c.max_retries = 1;
        c.extractor = Some("/nonexistent/docproc".into());
    })
    .await;
    let id = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    let st = s.wait(&id, "failed", 60).await;
    assert_eq!(st["attempts"], 2, "one retry after the first failure: {st}");
    assert!(
        st["error"]
            .as_str()
            .unwrap()
            .contains("extractor failed to run"),
        "{st}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_with_filters_and_pages() {
    let s = TestServer::start(|c| c.pools = common::no_local_workers()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.submit("a.csv", format!("n,v\n{i},1\n").as_bytes(), &[])
                .await,
        );
    }
    ids.push(s.submit("p.pdf", &pdf(&["hello"]), &[]).await);
    let all = s.get("/api/jobs?limit=4").await.json();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4);
    assert_eq!(all["jobs"][0]["job_id"], ids[5].as_str(), "newest first");
    let cursor = all["next_cursor"].as_str().unwrap();
    let rest = s
        .get(&format!("/api/jobs?limit=4&cursor={cursor}"))
        .await
        .json();
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let pdfs = s
        .get("/api/jobs?job_type=pdf_processing&status=queued")
        .await
        .json();
    assert_eq!(pdfs["jobs"].as_array().unwrap().len(), 1);
    let none = s.get("/api/jobs?status=completed,failed").await.json();
    assert!(none["jobs"].as_array().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_and_its_extractor_stopped() {
    let s = TestServer::start(|c| c.heartbeat = Some(std::time::Duration::from_millis(100))).await;
    // 4.5 M cells: seconds of parsing, far longer than the cancel takes.
    let mut csv = String::with_capacity(12 << 20);
    for i in 0..500_000 {
        csv.push_str(&format!("{i},2,3,4,5,6,7,8,9\n"));
    }
    let id = s.submit("big.csv", csv.as_bytes(), &[]).await;
    s.wait(&id, "processing", 60).await;
    let c = s.delete(&format!("/api/job/{id}")).await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["status"], "cancelling");
    assert_eq!(
        s.get(&format!("/api/job/{id}/status")).await.json()["cancel_requested"],
        true
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = s.get(&format!("/api/job/{id}/status")).await.json();
        if st["status"] == "cancelled" {
            break;
        }
        assert_ne!(
            st["status"], "completed",
            "the extraction was not stopped: {st}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "not cancelled: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.get(&format!("/api/job/{id}/result"))
        .await
        .assert_error(409, "not_completed");
    assert!(
        s.uploads().is_empty(),
        "the cancelled job's upload is removed"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_extractor_fails_only_its_job() {
    // An extractor that dies by SIGSEGV, as a parser overflowing its stack would.
    let dir = tempfile::tempdir().unwrap();
    let crash = common::script(dir.path(), "kill -SEGV $$");
    let s = TestServer::start(|c| c.extractor = Some(crash.clone())).await;
    let id = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    let st = s.wait(&id, "failed", 60).await;
    assert_eq!(st["attempts"], 1, "a crash is not retried: {st}");
    assert!(
        st["error"]
            .as_str()
            .unwrap()
            .contains("crashed on this file (SIGSEGV"),
        "{st}"
    );
    assert_eq!(
        s.get("/api/queue/stats").await.status,
        200,
        "the server lives on"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_past_the_grace_for_a_running_job() {
    // An extraction that would take a minute.
    let dir = tempfile::tempdir().unwrap();
    let slow = common::script(dir.path(), "sleep 60");
    let s = TestServer::start(|c| {
        c.extractor = Some(slow.clone());
        c.shutdown_grace = std::time::Duration::from_millis(200);
    })
    .await;
    let id = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&id, "processing", 60).await;
    let started = std::time::Instant::now();
    s.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_queue_backend() {
    let (_dir, broker, s) = on_remote_broker(|_| {}).await;
    let h = s.get("/healthz").await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    let r = s.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["backend"], "grpc");
    drop(broker);
    s.get("/readyz").await.assert_error(503, "unavailable");
    assert_eq!(s.get("/healthz").await.status, 200, "alive while not ready");
    s.stop().await;
}

/// A client's file name that reads like a flag (`-h`, `--help`, `-`) is
/// only a title: the extractor is never told to print its help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_that_look_like_flags_are_just_titles() {
    let s = TestServer::start(|_| {}).await;
    for name in ["-h.pdf", "--help", "-", "--title=x"] {
        let id = s.submit(name, &pdf(&["Flag-like name"]), &[]).await;
        let st = s.wait(&id, "completed", 60).await;
        assert_eq!(st["attempts"], 1, "{name}: {st}");
        let md = s.get(&format!("/api/job/{id}/markdown")).await;
        assert_eq!(md.text(), "<!-- page 1 -->\n\nFlag-like name\n", "{name}");
    }
    s.stop().await;
}

/// Uploads and results are other people's documents: files 0600,
/// directories 0700 under the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_results_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    // Without workers the upload stays where it was written.
    let s = TestServer::start(|c| c.pools = common::no_local_workers()).await;
    s.submit("r.pdf", &pdf(&["private"]), &[]).await;
    let uploads = s.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(mode(&uploads[0]), 0o600);
    assert_eq!(mode(&s.dir.path().join("uploads")), 0o700);
    s.stop().await;

    let s = TestServer::start(|_| {}).await;
    let id = s.submit("r.pdf", &pdf(&["private"]), &[]).await;
    s.wait(&id, "completed", 60).await;
    let job = s.dir.path().join("results").join(&id);
    assert_eq!(mode(&s.dir.path().join("results")), 0o700);
    assert_eq!(mode(&job), 0o700);
    for f in ["result.json", "result.html", "result.md", "summary.json"] {
        assert_eq!(mode(&job.join(f)), 0o600, "{f}");
    }
    // Served as stored, with its length (streamed from the file).
    for (route, file) in [
        ("result", "result.json"),
        ("html", "result.html"),
        ("markdown", "result.md"),
    ] {
        let r = s.get(&format!("/api/job/{id}/{route}")).await;
        let stored = std::fs::read(job.join(file)).expect("stored");
        assert_eq!(r.body, stored, "{route}");
        assert_eq!(
            r.header("content-length"),
            Some(stored.len().to_string().as_str()),
            "{route}"
        );
    }
    s.stop().await;
}

/// The extractor parses untrusted files: it gets none of the server's
/// environment (where the webhook secret, the LLM key and the SMTP and
/// queue passwords live) but what a process needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_gets_an_allowlisted_environment() {
    let tools = tempfile::tempdir().unwrap();
    let dump = tools.path().join("child-env");
    let extractor = common::script(
        tools.path(),
        &format!(
            "env > {}\nexec {} \"$@\"",
            dump.display(),
            env!("CARGO_BIN_EXE_docproc")
        ),
    );
    // Set by cargo for every test process, so the server has them.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let s = TestServer::start(move |c| c.extractor = Some(extractor)).await;
    let id = s.submit("t.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&id, "completed", 60).await;
    let env = std::fs::read_to_string(&dump).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(names.contains(&"PATH"), "{names:?}");
    // Set by the sandbox, not passed on: the allocator keeps no arena
    // reserved ahead of the child's address-space limit.
    assert!(
        env.lines().any(|l| l == "MIMALLOC_ARENA_RESERVE=0"),
        "{env}"
    );
    for name in &names {
        assert!(
            [
                "PATH",
                "LANG",
                "TZ",
                "TMPDIR",
                "RUST_BACKTRACE",
                "MIMALLOC_ARENA_RESERVE",
                "PWD",
                "SHLVL",
                "_"
            ]
            .contains(name)
                || name.starts_with("LC_"),
            "the extractor got {name}"
        );
    }
    s.stop().await;
}

/// `job_type` and `status` filters: repeats count once, more than 32
/// distinct values is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_are_deduplicated_and_bounded() {
    let s = TestServer::start(|_| {}).await;
    let id = s.submit("t.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&id, "completed", 60).await;
    let many = vec!["excel_processing"; 2000].join(",");
    let r = s.get(&format!("/api/jobs?job_type={many}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["jobs"][0]["job_id"], id.as_str());
    let distinct: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    s.get(&format!("/api/jobs?job_type={}", distinct.join(",")))
        .await
        .assert_error(400, "invalid_argument");
    s.get(&format!("/api/dead?job_type={}", distinct.join(",")))
        .await
        .assert_error(400, "invalid_argument");
    let r = s
        .get(&format!("/api/jobs?job_type={}", distinct[..32].join(",")))
        .await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

/// A zip whose end record declares more entries than extraction reads is
/// refused at upload, before the server opens its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_declaring_too_many_entries_is_refused_at_upload() {
    let s = TestServer::start(|_| {}).await;
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(&[0u8; 26]);
    bytes.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    bytes.extend_from_slice(&60_000u16.to_le_bytes());
    bytes.extend_from_slice(&60_000u16.to_le_bytes());
    bytes.extend_from_slice(&(60_000u32 * 46).to_le_bytes());
    bytes.extend_from_slice(&30u32.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    s.upload("many.xlsx", &bytes, &[])
        .await
        .assert_error(413, "too_many_entries");
    assert!(s.uploads().is_empty(), "the refused upload is not kept");
    s.stop().await;
}
