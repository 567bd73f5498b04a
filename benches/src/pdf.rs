//! PDF text extraction beside poppler's `pdftotext` on the same files in
//! the same run: the fidelity corpus (`make corpus`), every file pdftotext
//! can open, a process per file for both (the way the server runs its
//! sandboxed extractor), and our engine in this process for reference.
//! Rows count pages; latency is per file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docproc_extract::{self as extract, Format, Limits};

use crate::Row;

/// Rounds over the corpus; the rates are the totals over all rounds.
const ROUNDS: usize = 3;

/// The corpus directory: `DOCPROC_PDF_CORPUS`, else the cache `make corpus`
/// fills.
fn corpus_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("DOCPROC_PDF_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("HOME")?).join(".cache/docproc/corpus/pdf"),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "{} is missing: run `make corpus` (or set DOCPROC_PDF_CORPUS)",
        dir.display()
    );
    Ok(dir)
}

/// A corpus file with its page count.
struct File {
    path: PathBuf,
    pages: u64,
}

/// The corpus files pdftotext opens (a file with a user password is
/// refused by both), with their pages as our engine counts them.
fn files() -> anyhow::Result<Vec<File>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir()?)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
        .collect();
    paths.sort();
    for path in paths {
        if !pdftotext(&path)? {
            continue;
        }
        let Ok(result) =
            extract::extract(&path, Format::Pdf, &Limits::default(), &mut |_, _, _| {})
        else {
            continue;
        };
        let pages = result["pages"].as_array().map_or(0, Vec::len) as u64;
        out.push(File { path, pages });
    }
    anyhow::ensure!(!out.is_empty(), "the PDF corpus is empty");
    Ok(out)
}

fn pdftotext(path: &Path) -> anyhow::Result<bool> {
    let status = Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("pdftotext (poppler-utils) is needed: {e}"))?;
    Ok(status.success())
}

/// Runs `one` on every file `ROUNDS` times: pages, elapsed, per-file
/// p50/p99.
fn measure(
    files: &[File],
    mut one: impl FnMut(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Duration, (Duration, Duration))> {
    let mut times = Vec::new();
    let mut pages = 0;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        for f in files {
            let t = Instant::now();
            one(&f.path)?;
            times.push(t.elapsed());
            pages += f.pages;
        }
    }
    let elapsed = start.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Ok((pages, elapsed, (at(0.5), at(0.99))))
}

/// The rows: pdftotext, `docproc extract` (a process per file, writing
/// JSON, HTML and Markdown), our engine in process.
pub(crate) fn all() -> anyhow::Result<Vec<Row>> {
    let files = files()?;
    let exe = std::env::current_exe()?.with_file_name("docproc");
    anyhow::ensure!(
        exe.exists(),
        "{} is missing: build it with `cargo build --release -p docproc-server`",
        exe.display()
    );
    let version = Command::new("pdftotext").arg("-v").output()?;
    let version = String::from_utf8_lossy(&version.stderr)
        .lines()
        .next()
        .unwrap_or("pdftotext")
        .to_string();
    let out = tempfile::tempdir()?;

    let (pages, elapsed, lat) = measure(&files, |p| {
        anyhow::ensure!(pdftotext(p)?, "pdftotext failed on {}", p.display());
        Ok(())
    })?;
    let peer_rate = pages as f64 / elapsed.as_secs_f64();
    let mut rows = vec![Row {
        name: format!("peer: {version}, a process per file"),
        messages: pages,
        elapsed,
        latency: Some(lat),
        note: format!(
            "{} corpus PDFs × {ROUNDS}, text to /dev/null; rate = pages/s, latency per file",
            files.len()
        ),
    }];

    let (pages, elapsed, lat) = measure(&files, |p| {
        let status = Command::new(&exe)
            .args(["extract", "--format", "pdf", "--input"])
            .arg(p)
            .arg("--output-dir")
            .arg(out.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "docproc extract failed on {}",
            p.display()
        );
        Ok(())
    })?;
    let rate = pages as f64 / elapsed.as_secs_f64();
    rows.push(Row {
        name: "**PDF text: `docproc extract`, a process per file**".into(),
        messages: pages,
        elapsed,
        latency: Some(lat),
        note: format!(
            "the server's sandboxed extractor; writes result.json, .html and .md; {:.2}× pdftotext's pages/s",
            rate / peer_rate
        ),
    });

    let (pages, elapsed, lat) = measure(&files, |p| {
        extract::extract(p, Format::Pdf, &Limits::default(), &mut |_, _, _| {})?;
        Ok(())
    })?;
    let rate = pages as f64 / elapsed.as_secs_f64();
    rows.push(Row {
        name: "PDF text: the engine in process, one thread".into(),
        messages: pages,
        elapsed,
        latency: Some(lat),
        note: format!(
            "extract::extract only (no files written); {:.2}× pdftotext's pages/s",
            rate / peer_rate
        ),
    });
    Ok(rows)
}
