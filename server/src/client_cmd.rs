//! `docproc submit | status | cancel | stats | dead`: a command-line client
//! of the HTTP API, with a progress bar for `submit --wait`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Where the server is and how to reach it.
#[derive(Debug, clap::Args)]
pub(crate) struct Remote {
    /// Base URL of `docproc serve`.
    #[arg(long, env = "DOCPROC_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API key (sent as Authorization: Bearer).
    #[arg(long, env = "DOCPROC_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https).
    #[arg(long, env = "DOCPROC_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print the server's JSON answers as they are.
    #[arg(long)]
    json: bool,
}

/// `docproc submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// The document (xlsx, xls, ods, csv, pdf, …).
    file: PathBuf,
    /// low, normal, high or urgent.
    #[arg(long, default_value = "normal")]
    priority: String,
    /// Wait for the job to finish, showing its progress.
    #[arg(long)]
    wait: bool,
    /// Webhook called when the job finishes.
    #[arg(long)]
    callback_url: Option<String>,
    /// Your own id, echoed in status and events.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Also run the analysis step.
    #[arg(long)]
    analyze: bool,
    #[command(flatten)]
    remote: Remote,
}

/// `docproc status`, `docproc cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct JobArgs {
    /// The job id.
    job_id: String,
    #[command(flatten)]
    remote: Remote,
}

/// `docproc stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    remote: Remote,
}

/// `docproc dead`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeadArgs {
    /// Most jobs listed.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Run this dead job again (as a new job) instead of listing.
    #[arg(long, value_name = "JOB_ID", conflicts_with = "delete")]
    retry: Option<String>,
    /// Delete this dead job's files and take it off the list (admin key).
    #[arg(long, value_name = "JOB_ID")]
    delete: Option<String>,
    /// Only this job type.
    #[arg(long)]
    job_type: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    json: bool,
}

impl Api {
    fn new(r: &Remote) -> anyhow::Result<Self> {
        docproc_server::llm::install_crypto();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .user_agent(concat!("docproc-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &r.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        Ok(Self {
            http: b.build()?,
            base: r.server.trim_end_matches('/').to_string(),
            key: r.api_key.clone(),
            json: r.json,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["code"].as_str().unwrap_or("error");
            let msg = body["message"].as_str().unwrap_or("");
            bail!("{status}: {code}: {msg}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }
}

/// A multipart body with one file and text fields.
fn multipart(file: &Path, data: &[u8], fields: &[(&str, String)]) -> (String, Vec<u8>) {
    let boundary = format!("docproc-{:016x}", rand::random::<u64>());
    let mut body = Vec::with_capacity(data.len() + 1024);
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    let fname: String = file
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\r', '\n'], "_"))
        .unwrap_or_else(|| "upload".into());
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{fname}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn print(api: &Api, v: &Value, human: impl FnOnce(&Value)) {
    if api.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

pub(crate) async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let data = tokio::fs::read(&a.file)
        .await
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut fields = vec![("priority", a.priority.clone())];
    if let Some(u) = &a.callback_url {
        fields.push(("callback_url", u.clone()));
    }
    if let Some(c) = &a.correlation_id {
        fields.push(("correlation_id", c.clone()));
    }
    if a.analyze {
        fields.push(("analyze", "true".into()));
    }
    let (ctype, body) = multipart(&a.file, &data, &fields);
    let accepted = api
        .send(
            api.req(reqwest::Method::POST, "/api/upload-async")
                .header(reqwest::header::CONTENT_TYPE, ctype)
                .body(body),
        )
        .await?;
    let id = accepted["job_id"].as_str().unwrap_or_default().to_string();
    if !a.wait {
        print(&api, &accepted, |_| println!("{id}"));
        return Ok(());
    }
    eprintln!("job {id} accepted");
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    let status = loop {
        let s = api.get(&format!("/api/job/{id}/status")).await?;
        let state = s["status"].as_str().unwrap_or("unknown").to_string();
        // Workers report {"stage", "progress": {"done", "total", "unit"}}.
        let p = &s["progress"]["progress"];
        let pct = match (p["done"].as_f64(), p["total"].as_f64()) {
            _ if state == "completed" => 100.0,
            (Some(d), Some(t)) if t > 0.0 => (d / t * 100.0).clamp(0.0, 99.0),
            _ => 0.0,
        };
        let line = progress_line(&state, pct);
        if tty {
            eprint!("\r{line}");
        } else if line != last {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
        last = line;
        if matches!(state.as_str(), "completed" | "failed" | "cancelled") {
            if tty {
                eprintln!();
            }
            break s;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    print(&api, &status, |s| {
        println!("job {id}: {}", s["status"].as_str().unwrap_or(""));
        if s["status"] == "completed" {
            println!("result: {}/api/job/{id}/result", api.base);
            println!("html:   {}/api/job/{id}/html", api.base);
        } else if let Some(e) = s["error"].as_str() {
            println!("error: {e}");
        }
    });
    if status["status"] != "completed" {
        std::process::exit(1);
    }
    Ok(())
}

/// `[#########...........]  45% processing`.
fn progress_line(state: &str, pct: f64) -> String {
    const WIDTH: usize = 30;
    let filled = ((pct / 100.0) * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}% {state}",
        "#".repeat(filled.min(WIDTH)),
        ".".repeat(WIDTH - filled.min(WIDTH)),
        pct
    )
}

pub(crate) async fn status(a: JobArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let s = api.get(&format!("/api/job/{}/status", a.job_id)).await?;
    print(&api, &s, |s| {
        println!("job:       {}", s["job_id"].as_str().unwrap_or(""));
        println!("type:      {}", s["job_type"].as_str().unwrap_or(""));
        println!("status:    {}", s["status"].as_str().unwrap_or(""));
        println!("priority:  {}", s["priority"].as_str().unwrap_or(""));
        println!("attempts:  {}", s["attempts"]);
        println!("created:   {}", s["created_at"].as_str().unwrap_or(""));
        if let Some(e) = s["error"].as_str() {
            println!("error:     {e}");
        }
    });
    Ok(())
}

pub(crate) async fn cancel(a: JobArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let s = api
        .send(api.req(reqwest::Method::DELETE, &format!("/api/job/{}", a.job_id)))
        .await?;
    print(&api, &s, |s| {
        println!(
            "job {}: {} ({})",
            a.job_id,
            s["status"].as_str().unwrap_or(""),
            s["message"].as_str().unwrap_or("")
        );
    });
    Ok(())
}

pub(crate) async fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let s = api.get("/api/queue/stats").await?;
    print(&api, &s, |s| {
        println!(
            "{:<20} {:>8} {:>10} {:>10} {:>8} {:>10}",
            "job type", "queued", "processing", "completed", "failed", "cancelled"
        );
        for t in s["job_types"].as_array().into_iter().flatten() {
            let sum = |state: &str| -> u64 {
                t["priorities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p[state].as_u64())
                    .sum()
            };
            println!(
                "{:<20} {:>8} {:>10} {:>10} {:>8} {:>10}",
                t["job_type"].as_str().unwrap_or(""),
                sum("queued") + sum("pending") + sum("retrying"),
                sum("processing"),
                t["counters"]["completed"],
                t["counters"]["failed"],
                t["counters"]["cancelled"]
            );
        }
    });
    Ok(())
}

pub(crate) async fn dead(a: DeadArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    if let Some(id) = &a.retry {
        let path = format!("/api/dead/{id}/retry");
        let r = api.send(api.req(reqwest::Method::POST, &path)).await?;
        print(&api, &r, |r| {
            println!("job {id} retried as {}", r["job_id"].as_str().unwrap_or(""));
        });
        return Ok(());
    }
    if let Some(id) = &a.delete {
        let path = format!("/api/dead/{id}");
        let r = api.send(api.req(reqwest::Method::DELETE, &path)).await?;
        print(&api, &r, |_| println!("job {id} deleted"));
        return Ok(());
    }
    let mut path = format!("/api/dead?limit={}", a.limit);
    if let Some(t) = &a.job_type {
        path.push_str(&format!("&job_type={t}"));
    }
    let s = api.get(&path).await?;
    print(&api, &s, |s| {
        let jobs = s["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.is_empty() {
            println!("no failed jobs");
        }
        for j in jobs {
            let retried = j["retried_as"]
                .as_str()
                .map(|r| format!("  (retried as {r})"))
                .unwrap_or_default();
            println!(
                "{}  {:<16} {:>2} attempts  {}{retried}",
                j["job_id"].as_str().unwrap_or(""),
                j["job_type"].as_str().unwrap_or(""),
                j["attempts"],
                j["error"].as_str().unwrap_or("")
            );
        }
    });
    Ok(())
}
