//! Runs extraction in a child process, `docproc extract`, in its own
//! process group, under the resource limits the child sets on itself
//! before it opens the file ([`rlimit`]), with a wall-clock
//! timeout after which the whole group is killed. A file that makes a
//! parser overflow its stack, abort or run out of memory kills only the
//! child; the job fails with what happened.
//!
//! The child writes `result.json`, `result.html` and `result.md` into the output
//! directory and exits 0; on a refused file it prints the reason on stderr
//! and exits [`EXIT_INVALID`] or [`EXIT_LIMIT`].

pub mod rlimit;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use docproc_extract::{extract, html, markdown, summary, ExtractError, Format, Limits};

/// Exit code of a child that refused a damaged, encrypted or foreign file.
pub const EXIT_INVALID: i32 = 2;
/// Exit code of a child that refused a file over a limit.
pub const EXIT_LIMIT: i32 = 3;
/// Exit code of a child that could not read or write its files.
pub const EXIT_IO: i32 = 4;
/// Exit code of `docproc` given arguments it does not understand (BSD's
/// `EX_USAGE`): the extractor was run wrongly, not the file's fault.
pub const EXIT_USAGE: i32 = 64;
/// Exit code of a child that could not set its resource limits (BSD's
/// `EX_OSERR`) and was not allowed to run without them.
pub const EXIT_NO_LIMITS: i32 = 71;
/// The environment variables a child keeps (and any `LC_*`).
const CHILD_ENV: &[&str] = &["PATH", "LANG", "TZ", "TMPDIR"];
/// Longest progress line read from a child; longer ones are skipped.
const MAX_PROGRESS_LINE: u64 = 4096;
/// Largest `summary.json` read back from a child.
const MAX_SUMMARY: u64 = 64 * 1024;
/// Most stderr kept from a child.
const MAX_STDERR: u64 = 16 * 1024;

/// How a sandboxed extraction failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// The file cannot be extracted (damaged, encrypted, over a limit).
    /// Retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// The parser crashed or ran out of memory or CPU time on this file.
    /// Retrying will not help.
    #[error("{0}")]
    Crashed(String),
    /// It took longer than allowed.
    #[error("extraction timed out after {0:?}")]
    TimedOut(Duration),
    /// The extractor could not be started or its output not read; may be transient.
    #[error("extractor failed to run: {0}")]
    Io(String),
}

impl SandboxError {
    /// Whether the same file will fail the same way again.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SandboxError::Refused(_) | SandboxError::Crashed(_))
    }
}

/// Where and how extractor processes run.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The `docproc` binary (its `extract` subcommand).
    pub exe: PathBuf,
    /// Input and process limits, passed to the child.
    pub limits: Limits,
    /// Let a child that cannot set its resource limits run without them
    /// (`extract.allow_unlimited`); by default it refuses.
    pub allow_unlimited: bool,
}

impl Sandbox {
    /// The current executable.
    pub fn current(limits: Limits) -> std::io::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            limits,
            allow_unlimited: false,
        })
    }

    /// Extracts `input` into `out_dir` (`result.json`, `result.html`,
    /// `result.md`, `summary.json`) and answers the summary. `timeout` bounds wall-clock
    /// time (and, rounded up, CPU time). The child's progress reports
    /// (`{"done","total","unit"}`) are published on `progress` as they arrive.
    pub async fn run(
        &self,
        format: Format,
        input: &Path,
        out_dir: &Path,
        title: &str,
        timeout: Duration,
        progress: watch::Sender<Option<Value>>,
    ) -> Result<Value, SandboxError> {
        let io = |e: std::io::Error| SandboxError::Io(e.to_string());
        crate::durable::create_private_dir_all_async(out_dir.to_path_buf())
            .await
            .map_err(io)?;
        let limits =
            serde_json::to_string(&self.limits).map_err(|e| SandboxError::Io(e.to_string()))?;
        let mut cmd = Command::new(&self.exe);
        // `--name=value`: a value (a title from the client's file name)
        // that starts with `-` is never read as a flag.
        let joined = |flag: &str, value: &std::ffi::OsStr| {
            let mut arg = std::ffi::OsString::from(flag);
            arg.push(value);
            arg
        };
        cmd.arg("extract")
            .arg(format!("--format={}", format.as_str()))
            .arg(joined("--input=", input.as_os_str()))
            .arg(joined("--output-dir=", out_dir.as_os_str()))
            .arg(joined("--title=", std::ffi::OsStr::new(title)))
            .arg(joined("--limits=", std::ffi::OsStr::new(&limits)))
            .arg(format!("--cpu-secs={}", timeout.as_secs().max(1) + 1))
            .args(self.allow_unlimited.then_some("--allow-unlimited"))
            // The parser of untrusted files gets none of the server's
            // secrets (webhook secret, LLM key, SMTP and queue passwords
            // live in its environment): only what a process needs.
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| {
                k.to_str()
                    .is_some_and(|k| CHILD_ENV.contains(&k) || k.starts_with("LC_"))
            }))
            .env("RUST_BACKTRACE", "0")
            // mimalloc (the binary's allocator) reserves a 1 GiB arena at
            // its first allocation, before the child sets its address-space
            // limit; memory taken from that reservation would escape the
            // limit. Without it every segment is its own mapping, counted.
            .env("MIMALLOC_ARENA_RESERVE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a timeout, a cancel or a dropped job kills
            // whatever it started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io)?;
        let mut group = Group(child.id());
        let stdout = child.stdout.take();
        let read_progress = async move {
            let Some(out) = stdout else { return };
            let mut reader = BufReader::new(out);
            let mut line = Vec::with_capacity(256);
            // A line is read up to MAX_PROGRESS_LINE bytes; a longer one is
            // skipped to its end, never held whole.
            let mut skipping = false;
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(MAX_PROGRESS_LINE)
                    .read_until(b'\n', &mut line)
                    .await;
                if !matches!(n, Ok(n) if n > 0) {
                    break;
                }
                let ended = line.last() == Some(&b'\n');
                if skipping || !ended && line.len() as u64 >= MAX_PROGRESS_LINE {
                    skipping = !ended;
                    continue;
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    progress.send_replace(Some(v));
                }
            }
        };
        let mut stderr = child.stderr.take();
        let read_err = async move {
            let mut buf = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.take(MAX_STDERR).read_to_end(&mut buf).await;
            }
            String::from_utf8_lossy(&buf).trim().to_string()
        };
        let waited = tokio::time::timeout(timeout, async {
            let (status, err, ()) = tokio::join!(child.wait(), read_err, read_progress);
            (status, err)
        })
        .await;
        let (status, err) = match waited {
            Ok((status, err)) => {
                // Reaped: stragglers it left behind go now; after this the
                // group id may be reused.
                group.kill();
                group.0 = None;
                (status.map_err(io)?, err)
            }
            Err(_) => {
                group.kill();
                let _ = child.kill().await;
                return Err(SandboxError::TimedOut(timeout));
            }
        };
        let last = err.lines().last().unwrap_or("").to_string();
        if status.success() {
            // The summary goes into every status answer and WebSocket
            // frame: a bounded read.
            let mut raw = Vec::new();
            tokio::fs::File::open(out_dir.join("summary.json"))
                .await
                .map_err(io)?
                .take(MAX_SUMMARY + 1)
                .read_to_end(&mut raw)
                .await
                .map_err(io)?;
            if raw.len() as u64 > MAX_SUMMARY {
                return Err(SandboxError::Io(format!(
                    "the extractor's summary is over {MAX_SUMMARY} bytes"
                )));
            }
            return serde_json::from_slice(&raw).map_err(|e| SandboxError::Io(e.to_string()));
        }
        match status.code() {
            Some(EXIT_INVALID) | Some(EXIT_LIMIT) => Err(SandboxError::Refused(last)),
            // 126/127: the shell of a wrapper could not execute it.
            Some(EXIT_IO) | Some(EXIT_USAGE) | Some(EXIT_NO_LIMITS) | Some(126) | Some(127) => {
                Err(SandboxError::Io(last))
            }
            Some(code) => Err(SandboxError::Crashed(format!(
                "the parser failed on this file (exit {code}): {}",
                crash_reason(&err)
            ))),
            None => Err(SandboxError::Crashed(format!(
                "the parser crashed on this file ({}): {}",
                signal_name(&status),
                crash_reason(&err)
            ))),
        }
    }
}

fn crash_reason(stderr: &str) -> String {
    if stderr.contains("overflowed its stack") {
        "stack overflow (nesting too deep)".into()
    } else if stderr.contains("memory allocation") || stderr.contains("capacity overflow") {
        "out of memory".into()
    } else {
        stderr
            .lines()
            .last()
            .unwrap_or("no message")
            .chars()
            .take(500)
            .collect()
    }
}

fn signal_name(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(6) => "SIGABRT".into(),
        Some(9) => "SIGKILL, out of CPU time or killed".into(),
        Some(11) => "SIGSEGV".into(),
        Some(24) => "SIGXCPU, out of CPU time".into(),
        Some(25) => "SIGXFSZ, a result file over its size limit".into(),
        Some(s) => format!("signal {s}"),
        None => "unknown".into(),
    }
}

/// A child's process group, killed (SIGKILL) when the extraction ends or
/// its task is dropped, until the child is reaped.
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        let pid = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child side (`docproc extract`): extract, write the files, exit.
/// Returns the process exit code.
pub fn child_main(
    format: Format,
    input: &Path,
    out_dir: &Path,
    title: &str,
    limits: &Limits,
) -> i32 {
    // Progress goes to stdout, one JSON object per line, for the parent.
    let mut report = |done: usize, total: usize, unit: &'static str| {
        println!(
            "{}",
            serde_json::json!({ "done": done, "total": total, "unit": unit })
        );
    };
    let result = match extract(input, format, limits, &mut report) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return match e {
                ExtractError::Invalid(_) => EXIT_INVALID,
                ExtractError::Limit(_) => EXIT_LIMIT,
                ExtractError::Io(_) => EXIT_IO,
            };
        }
    };
    // On disk (fsynced, directory included) before the child exits: the
    // parent completes the job when it has.
    let write = || -> std::io::Result<()> {
        let page = html::render(title, &result);
        let md = markdown::render(&result);
        let json = serde_json::to_vec(&result)?;
        let summary = serde_json::to_vec(&summary(&result))?;
        crate::durable::write_files(
            out_dir,
            &[
                ("result.html", page.as_bytes()),
                ("result.md", md.as_bytes()),
                ("result.json", &json),
                ("summary.json", &summary),
            ],
        )
    };
    match write() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cannot write the result: {e}");
            EXIT_IO
        }
    }
}
