//! The dashboard in a real headless Chromium (Debian's chromium and
//! chromedriver): sign in with an API key, upload through the form and see
//! the job reach completed over the WebSocket, cancel a queued job, retry a
//! dead one, open a job's detail. `DOCPROC_SCREENSHOTS=DIR` keeps PNGs.

use crate::common;

use std::time::Duration;

use common::webdriver::Browser;
use common::{request_with, script, TestServer};
use docproc_broker::auth::{generate, Keys, Scope};

fn shot_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("DOCPROC_SCREENSHOTS").map(std::path::PathBuf::from)
}

async fn shot(b: &Browser, name: &str) {
    if let Some(dir) = shot_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        b.screenshot(&dir.join(format!("{name}.png"))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_uploads_follows_cancels_and_retries() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let tools = tempfile::tempdir().unwrap();
    let mark = tools.path().join("failed-once");
    // The extractor: a file containing FAILONCE fails the first time (as an
    // extractor that could not run), every file takes 2 s, then the real one.
    let extractor = script(
        tools.path(),
        &format!(
            "for a in \"$@\"; do case \"$a\" in --input=*) f=\"${{a#--input=}}\";; esac; done\n\
             if grep -q FAILONCE \"$f\" && [ ! -f {mark} ]; then touch {mark}; echo 'extractor unavailable' >&2; exit 4; fi\n\
             sleep 2\nexec {exe} \"$@\"",
            mark = mark.display(),
            exe = env!("CARGO_BIN_EXE_docproc"),
        ),
    );
    let (key, entry) = generate("dashboard", Scope::Write).unwrap();
    let keys = Keys::parse(&[entry.entry()]).unwrap();
    let s = TestServer::start(move |c| {
        c.keys = keys;
        c.extractor = Some(extractor);
        c.max_retries = 0;
        c.pools.excel = 1;
    })
    .await;
    let base = format!("http://127.0.0.1:{}", s.addr.port());
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };

    // Without the cookie the dashboard is the sign-in page.
    b.goto(&format!("{base}/ui")).await;
    b.find("#key", 10).await;
    b.type_into("#key", "dp_not-a-key").await;
    b.click("#login").await;
    b.wait_text("#login-error", 10, |t| t.contains("unknown API key"))
        .await;
    b.type_into("#key", &key).await;
    b.click("#login").await;
    b.wait_text("#live", 15, |t| t == "live").await;
    shot(&b, "1-empty").await;

    // Upload through the form; the row follows the job to completed.
    let upload = |path: String| {
        let b = &b;
        async move {
            let before = b.text("#upload-result").await;
            b.type_into("#upload-file", &path).await;
            b.click("#upload-button").await;
            let t = b
                .wait_text("#upload-result", 15, |t| {
                    t != before && t.starts_with("accepted: ")
                })
                .await;
            t.trim_start_matches("accepted: ").to_string()
        }
    };
    let a = upload(file("report.csv", "region,total\nnorth,12.5\nsouth,7\n")).await;
    let row = |id: &str, cell: &str| format!("#jobs tr[data-job=\"{id}\"] {cell}");
    b.wait_text(&row(&a, ".status"), 30, |t| t == "completed")
        .await;
    shot(&b, "2-completed").await;

    // Two more: the second waits behind the first (one worker) and is cancelled.
    let busy = upload(file("busy.csv", "a,b\n1,2\n")).await;
    let queued = upload(file("queued.csv", "a,b\n3,4\n")).await;
    b.wait_text(&row(&queued, ".status"), 10, |t| t == "queued")
        .await;
    b.click(&row(&queued, "button.cancel")).await;
    b.wait_text(&row(&queued, ".status"), 10, |t| t == "cancelled")
        .await;
    b.wait_text(&row(&busy, ".status"), 30, |t| t == "completed")
        .await;

    // A job that fails once lands in dead jobs; Retry runs it again.
    let flaky = upload(file("flaky.csv", "note,n\nFAILONCE,1\n")).await;
    b.wait_text(&row(&flaky, ".status"), 30, |t| t == "failed")
        .await;
    let dead_row = |cell: &str| format!("#dead tr[data-job=\"{flaky}\"] {cell}");
    b.wait_text(&dead_row(".error"), 10, |t| {
        t.contains("extractor unavailable")
    })
    .await;
    shot(&b, "3-dead").await;
    b.click(&dead_row("button.retry")).await;
    let retried = b
        .wait_text(&dead_row(".retried-as"), 10, |t| !t.is_empty())
        .await;
    b.wait_text(&row(&retried, ".status"), 30, |t| t == "completed")
        .await;

    // The detail of the first job: status, history, result links.
    b.click(&row(&a, "a.job-link")).await;
    b.wait_text("#detail-fields [data-field=status]", 10, |t| {
        t == "completed"
    })
    .await;
    assert!(!b.text("#result-json").await.is_empty());
    assert_eq!(b.text("#result-markdown").await, "result (Markdown)");
    shot(&b, "4-detail").await;

    // The API reference renders from /api/openapi.json, offline.
    b.goto(&format!("{base}/api/docs")).await;
    b.wait_text("#reference", 10, |t| {
        t.contains("POST /api/upload-async") && t.contains("Submitted")
    })
    .await;
    shot(&b, "5-api-reference").await;

    // What the dashboard did is what the API holds.
    let auth = format!("Bearer {key}");
    let status = |id: String| {
        let auth = auth.clone();
        async move {
            request_with(
                s.addr,
                "GET",
                &format!("/api/job/{id}/status"),
                &[("Authorization", &auth)],
                None,
            )
            .await
            .json()
        }
    };
    assert_eq!(status(a.clone()).await["status"], "completed");
    assert_eq!(status(queued.clone()).await["status"], "cancelled");
    assert_eq!(status(flaky.clone()).await["status"], "failed");
    let r = status(retried.clone()).await;
    assert_eq!(
        (r["status"].as_str(), r["job_type"].as_str()),
        (Some("completed"), Some("excel_processing"))
    );
    let result = request_with(
        s.addr,
        "GET",
        &format!("/api/job/{retried}/result"),
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert!(
        result.text().contains("FAILONCE"),
        "the retry processed the same upload"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
