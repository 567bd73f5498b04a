//! What the server acknowledges is on disk first: `docproc serve` runs
//! under `strace`, and the order of its fsyncs, renames and answers is
//! read back from the trace — the upload and its directory entry are
//! fsynced before the 202 goes out; the result files are fsynced, renamed
//! and their directories fsynced before the extractor exits (and so
//! before the job is completed).

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{multipart, pdf, request};

/// `strace` is installed by `make test`; without it the test cannot run,
/// which is an error when `CI` is set.
fn strace() -> Option<&'static str> {
    let ok = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but strace is missing (make test installs it)"
        );
        eprintln!("skipped: strace is not installed");
        return None;
    }
    Some("strace")
}

/// Index of the first trace line containing every one of `parts`.
fn find(lines: &[String], parts: &[&str]) -> Option<usize> {
    lines
        .iter()
        .position(|l| parts.iter().all(|p| l.contains(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_results_are_fsynced_before_they_are_acknowledged() -> anyhow::Result<()> {
    let Some(strace) = strace() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let log = dir.path().join("trace.log");
    let mut command = Command::new(strace);
    command
        .args(["-f", "-yy", "-s", "48", "-e"])
        .arg("trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg")
        .arg("-o")
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_docproc"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data);
    let (mut child, addr) = common::announced(command);
    let addr: std::net::SocketAddr = addr.parse()?;
    common::wait_started(addr, false).await;

    let (ct, body) = multipart("invoice.pdf", &pdf(&["Durable text"]), &[]);
    let r = request(addr, "POST", "/api/upload-async", Some((&ct, body))).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["job_id"].as_str().expect("job_id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = request(addr, "GET", &format!("/api/job/{id}/status"), None)
            .await
            .json();
        if s["status"] == "completed" {
            break;
        }
        assert!(s["status"] != "failed", "{s}");
        assert!(tokio::time::Instant::now() < deadline, "not completed: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop the server (strace's child); strace ends with it.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))?;
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").arg(pid).status();
    }
    let _ = child.wait();

    let trace = std::fs::read_to_string(&log)?;
    let lines: Vec<String> = trace.lines().map(str::to_string).collect();
    let uploads = data.join("uploads");
    let uploads = uploads.to_string_lossy();
    // The upload: its data, then its directory, then the 202.
    let file = find(&lines, &["fsync(", &format!("{uploads}/"), ".upload>"])
        .expect("the upload file is fsynced");
    let dir_sync = find(&lines, &["fsync(", &format!("<{uploads}>")])
        .expect("the uploads directory is fsynced");
    let accepted = find(&lines, &["HTTP/1.1 202"]).expect("the 202 is in the trace");
    assert!(
        file < accepted && dir_sync < accepted,
        "upload fsync {file}, dir {dir_sync}, 202 at {accepted}"
    );

    // The result: each file's data, its rename, then the job's directory
    // and the results directory, all before the status says completed.
    let results = data.join("results");
    let job_dir = results.join(&id);
    let (results, job_dir) = (results.to_string_lossy(), job_dir.to_string_lossy());
    let tmp_sync = find(
        &lines,
        &["fdatasync(", &format!("{job_dir}/.result.json."), ".tmp>"],
    )
    .expect("result.json's data is fsynced");
    let renamed = find(
        &lines,
        &["rename", ".result.json.", &format!("{job_dir}/result.json")],
    )
    .expect("result.json is renamed into place");
    let job_dir_sync = find(&lines, &["fsync(", &format!("<{job_dir}>")])
        .expect("the job's result directory is fsynced");
    let results_sync = find(&lines, &["fsync(", &format!("<{results}>")])
        .expect("the results directory is fsynced");
    assert!(
        tmp_sync < renamed && renamed < job_dir_sync && job_dir_sync < results_sync,
        "data {tmp_sync}, rename {renamed}, dir {job_dir_sync}, results {results_sync}"
    );
    Ok(())
}
