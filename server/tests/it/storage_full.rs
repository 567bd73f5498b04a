//! A storage failure is loud: a real `docproc serve` whose embedded queue
//! lives on a small filesystem that fills up answers the uploads it cannot
//! store with an error (never 202), stops with a non-zero exit, and after a
//! restart with room again every upload it had answered 202 is there and
//! completes. Under `batch` durability, where writes succeed and only the
//! background sync fails (ext4 on a loop device whose backing file cannot
//! grow: writeback fails at fsync), nothing is answered 202 after the
//! failed sync and the server stops too.

use crate::common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{docproc_process, exit_within, multipart, request, try_request, Proc};

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

/// ext4 on a loop device over a sparse image in `backing`: the filesystem
/// has room, but once `backing` is full its writeback (fsync) fails.
struct LoopExt4 {
    mnt: tempfile::TempDir,
    dev: String,
}

impl LoopExt4 {
    fn new(backing: &Path) -> Self {
        let img = backing.join("disk.img");
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        run(Command::new("truncate").args(["-s", "256m"]).arg(&img));
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&img));
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&img));
        let mnt = tempfile::tempdir().unwrap();
        run(Command::new("mount").arg(&dev).arg(mnt.path()));
        Self { mnt, dev }
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mnt.path())
            .status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
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
    let status = exit_within(&mut p, 60).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_sync_stops_batch_writes_and_the_server() {
    let Some(backing) = SmallFs::mount("64m") else {
        return;
    };
    let disk = LoopExt4::new(backing.path());
    let data = tempfile::tempdir().unwrap();
    let queue = format!(
        "rocksdb://{}?durability=batch:50",
        disk.mnt.path().join("queue").display()
    );
    let (mut p, addr) = serve(data.path(), &queue, "0").await;
    for n in 0..10 {
        let r = upload(addr, n).await.expect("answered");
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // The loop device's image can no longer grow: the next sync fails.
    fill(&backing.path().join("filler"));
    let mut refused_at = None;
    let mut answers = Vec::new();
    for n in 10..5000 {
        let r = upload(addr, n).await;
        let status = r.as_ref().map(|r| r.status);
        answers.push(status);
        if status != Some(202) {
            refused_at.get_or_insert(answers.len() - 1);
        }
        if r.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = refused_at.expect("the failed sync was noticed");
    assert!(
        answers[first..].iter().all(|a| *a != Some(202)),
        "a write was acknowledged after the failed sync: {:?}",
        &answers[first..]
    );
    let status = exit_within(&mut p, 60).await;
    assert!(!status.success(), "{status:?}");
    eprintln!(
        "{} uploads answered 202 after the image filled, then {:?}",
        first,
        &answers[first..]
    );
}
