//! End to end through the HTTP API: `docproc serve` in this process with
//! its default pools (excel 2, pdf 2) and extractor processes from the
//! release `docproc` binary; small xlsx and PDF files uploaded by 4 clients.
//! Jobs/s from the first upload to the last completion; upload→start
//! latency from each job's `created_at` and `started_at` (server clock, ms)
//! while a worker is free (uploads one at a time).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use docproc_server::config::ServeConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::workloads::percentiles;
use crate::Row;

/// Concurrent uploading clients.
const CLIENTS: usize = 4;
/// Uploads of the latency phase, one at a time.
const PACED: usize = 100;

/// `GET /readyz`.
fn ready_request(addr: SocketAddr) -> String {
    format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// One request on a fresh connection; answers the status and the JSON body.
async fn call(addr: SocketAddr, head: String, body: &[u8]) -> anyhow::Result<(u16, Value)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no response head"))?;
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Ok((status, json))
}

async fn upload(addr: SocketAddr, file: &[u8]) -> anyhow::Result<String> {
    let boundary = "docproc-bench";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /api/upload-async HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (status, json) = call(addr, head, &body).await?;
    anyhow::ensure!(status == 202, "upload answered {status}: {json}");
    Ok(json["job_id"].as_str().unwrap_or_default().to_string())
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    Ok(call(addr, head, b"").await?.1)
}

fn xlsx() -> anyhow::Result<Vec<u8>> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.write_string(0, 0, "Region")?;
    ws.write_string(0, 1, "Total")?;
    for r in 1..=50u32 {
        ws.write_string(r, 0, format!("region {r}"))?;
        ws.write_number(r, 1, f64::from(r) * 1.5)?;
    }
    Ok(wb.save_to_buffer()?)
}

fn pdf() -> anyhow::Result<Vec<u8>> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(
        dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" },
    );
    let ops: Vec<Operation> = (0..40)
        .flat_map(|i| {
            [
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 10.into()]),
                Operation::new("Td", vec![72.into(), (760 - i * 16).into()]),
                Operation::new(
                    "Tj",
                    vec![Object::string_literal(format!(
                        "Line {i} of the quarterly report."
                    ))],
                ),
                Operation::new("ET", vec![]),
            ]
        })
        .collect();
    let content = doc.add_object(Stream::new(
        dictionary! {},
        Content { operations: ops }.encode()?,
    ));
    let page = doc
        .add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1,
            "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out)?;
    Ok(out)
}

/// Excel and PDF rows.
pub(crate) async fn all(n: u64) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe()?.with_file_name("docproc");
    anyhow::ensure!(
        exe.is_file(),
        "{} is missing: build it with `cargo build --release -p docproc-server`",
        exe.display()
    );
    Ok(vec![
        through("HTTP upload → completed: xlsx (50×2)", xlsx()?, n, &exe).await?,
        through("HTTP upload → completed: pdf (1 page)", pdf()?, n, &exe).await?,
    ])
}

async fn through(name: &str, file: Vec<u8>, n: u64, exe: &std::path::Path) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir_in(".")?;
    let cfg = ServeConfig {
        data_dir: dir.path().to_path_buf(),
        extractor: Some(exe.to_path_buf()),
        ..ServeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(docproc_server::serve::serve(cfg, listener, async {
        let _ = stopped.await;
    }));
    // It answers 503 `starting` until its queue is open.
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(addr, ready_request(addr), b"").await?.0 != 200 {
        anyhow::ensure!(Instant::now() < deadline, "docproc serve did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS as u64 {
        let file = file.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (c..n).step_by(CLIENTS) {
                ids.push(upload(addr, &file).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await??);
    }
    for id in &ids {
        completed(addr, id).await?;
    }
    let elapsed = start.elapsed();
    // Latency with a free worker: one upload at a time.
    let mut latencies = Vec::new();
    for _ in 0..PACED {
        let id = upload(addr, &file).await?;
        latencies.push(completed(addr, &id).await?);
    }
    let _ = stop.send(());
    server.await??;
    Ok(Row {
        name: name.to_string(),
        messages: n,
        elapsed,
        latency: percentiles(latencies),
        note: format!(
            "{CLIENTS} clients, default pools, extractor process per job; latency = upload accepted→worker started, {PACED} uploads one at a time (ms resolution)"
        ),
    })
}

/// Waits for a job to complete; answers its upload→start time.
async fn completed(addr: SocketAddr, id: &str) -> anyhow::Result<Duration> {
    loop {
        let s = get(addr, &format!("/api/job/{id}/status")).await?;
        match s["status"].as_str() {
            Some("completed") => {
                let ms = |k: &str| s[k].as_str().and_then(parse_ms);
                let (c, st) = (ms("created_at"), ms("started_at"));
                return Ok(Duration::from_millis(
                    st.unwrap_or(0).saturating_sub(c.unwrap_or(0)),
                ));
            }
            Some("failed" | "cancelled") => anyhow::bail!("job {id} ended: {s}"),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as the API writes it.
fn parse_ms(t: &str) -> Option<u64> {
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date.split('-').filter_map(|p| p.parse().ok()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<u64> = hms.split(':').filter_map(|p| p.parse().ok()).collect();
    if d.len() != 3 || h.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant), inverse of the server's formatter.
    let (y, m, dd) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some((days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1000 + frac.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_the_api_writes() {
        assert_eq!(
            super::parse_ms("2024-03-01T12:00:00.123Z"),
            Some(1_709_294_400_123)
        );
        assert_eq!(
            super::parse_ms("2000-02-29T00:00:00.000Z"),
            Some(951_782_400_000)
        );
        assert_eq!(super::parse_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(super::parse_ms("yesterday"), None);
    }
}
