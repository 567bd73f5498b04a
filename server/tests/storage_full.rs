//! A storage failure is loud: a real `docproc serve` whose embedded queue
//! lives on a small filesystem that fills up answers the uploads it cannot
//! store with an error (never 202), stops with a non-zero exit, and after a
//! restart with room again every upload it had answered 202 is there and
//! completes.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{docproc_process, multipart, request, try_request, Proc};

/// A size-limited tmpfs mounted for the test, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounting needs root (as `make test` runs in CI); elsewhere the test
    /// is skipped, which is an error when `CI` is set.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but a tmpfs cannot be mounted (the test needs root)"
            );
            eprintln!("skipped: cannot mount a tmpfs (not root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling: {e}"),
        }
    }
    // What is left is smaller than a chunk: take it byte by byte.
    while f.write_all(&[0]).is_ok() {}
}

async fn serve(data: &Path, queue: &str, workers: &str) -> (Proc, SocketAddr) {
    let (child, addr) = docproc_process(
        "serve",
        data,
        &[
            "--queue",
            queue,
            "--excel-workers",
            workers,
            "--pdf-workers",
            "0",
            "--ai-workers",
            "0",
        ],
    );
    let addr: SocketAddr = addr.parse().unwrap();
    common::wait_started(addr, false).await;
    (Proc(child), addr)
}

async fn upload(addr: SocketAddr, n: usize) -> Option<common::Response> {
    let body = format!("n,square\n{n},{}\n", n * n);
    let (ct, b) = multipart(&format!("t{n}.csv"), body.as_bytes(), &[]);
    tokio::time::timeout(
        Duration::from_secs(30),
        try_request(addr, "POST", "/api/upload-async", &[], Some((&ct, b))),
    )
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_serve_and_loses_nothing_it_acknowledged() {
    let Some(fs) = SmallFs::mount("32m") else {
        return;
    };
    // Uploads and results on the real disk; the queue on the small one.
    let data = tempfile::tempdir().unwrap();
    let queue = format!("rocksdb://{}", fs.path().join("queue").display());
    let (mut p, addr) = serve(data.path(), &queue, "0").await;
    let mut accepted: Vec<String> = Vec::new();
    for n in 0..20 {
        let r = upload(addr, n).await.expect("answered");
        assert_eq!(r.status, 202, "{}", r.text());
        accepted.push(r.json()["job_id"].as_str().unwrap().to_string());
    }
    let filler: PathBuf = fs.path().join("filler");
    fill(&filler);
    // Until the queue's next write fails, uploads may still be stored (a
    // log file's space taken before); the first that is not is refused.
    let mut refused = None;
    for n in 20..5000 {
        match upload(addr, n).await {
            Some(r) if r.status == 202 => {
                accepted.push(r.json()["job_id"].as_str().unwrap().to_string())
            }
            Some(r) => {
                refused = Some((r.status, r.text()));
                break;
            }
            // The process stopped between answers.
            None => break,
        }
    }
    if let Some((status, body)) = &refused {
        assert!(
            *status >= 500,
            "an upload that could not be stored is an error: {status} {body}"
        );
    }
    // The server stops on its own, with an error.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "docproc serve still running on a failed store (refused: {refused:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !status.success(),
        "a failed store is a non-zero exit: {status:?}"
    );
    // Room again: every upload answered 202 is there and runs.
    std::fs::remove_file(&filler).unwrap();
    let (_p2, addr2) = serve(data.path(), &queue, "1").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &accepted {
        loop {
            let s = request(addr2, "GET", &format!("/api/job/{id}/status"), None)
                .await
                .json();
            if s["status"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} after the restart: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "{} uploads acknowledged before the disk filled, all completed after the restart; refused: {:?}",
        accepted.len(),
        refused.map(|r| r.0)
    );
}
