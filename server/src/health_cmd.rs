//! `docproc health URL`: the probe container health checks run (images
//! have no curl). It asks a running docproc whether it serves — an HTTP(S)
//! `GET` (`/healthz` unless the URL names a path) or the standard gRPC
//! health service of `docproc broker` — and exits 0 when it does, 1 with
//! the reason on stderr when it does not.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

/// The gRPC service `docproc broker` serves (proto/docproc/broker/v1).
const BROKER_SERVICE: &str = "docproc.broker.v1.Broker";

/// `docproc health`.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// http(s)://HOST:PORT[/PATH] (path default /healthz), or
    /// grpc(s)://HOST:PORT for the broker's gRPC health service.
    #[arg(default_value = "http://127.0.0.1:8080/healthz")]
    url: String,
    /// Seconds the answer may take.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// PEM file of the CA that signed the server's certificate (https, grpcs).
    #[arg(long, env = "DOCPROC_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// Runs the probe; an error is an unhealthy answer.
pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let url = url::Url::parse(&args.url).with_context(|| format!("{:?} is not a URL", args.url))?;
    let ca = match &args.ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let probe = async {
        match url.scheme() {
            "http" | "https" => http(url, ca).await,
            "grpc" | "grpcs" => grpc(url, ca).await,
            other => bail!(
                "unknown scheme {other:?}; use http(s)://HOST:PORT[/PATH] or grpc(s)://HOST:PORT"
            ),
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .with_context(|| format!("{} gave no answer within {timeout:?}", args.url))?
}

async fn http(mut url: url::Url, ca: Option<Vec<u8>>) -> anyhow::Result<()> {
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/healthz");
    }
    docproc_server::llm::install_crypto();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("docproc-health/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca {
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).context("the CA file is not a PEM certificate")?,
        );
    }
    let resp = b
        .build()?
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    Ok(())
}

async fn grpc(url: url::Url, ca: Option<Vec<u8>>) -> anyhow::Result<()> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };

    let host = url.host_str().context("the URL names no host")?;
    let port = url.port().unwrap_or(7070);
    let tls = url.scheme() == "grpcs";
    let scheme = if tls { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{host}:{port}"))?;
    if tls {
        docproc_server::llm::install_crypto();
        let mut cfg = ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(cfg)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    // The broker's own service: it turns NOT_SERVING when the broker starts
    // to drain, while the server as a whole ("") still answers.
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: BROKER_SERVICE.into(),
        })
        .await
        .with_context(|| format!("the health service of {url}"))?
        .into_inner();
    match answer.status() {
        ServingStatus::Serving => Ok(()),
        other => bail!("{url} answered {}", other.as_str_name()),
    }
}
