//! TLS (rustls) on the HTTP listener and on the broker's gRPC listener,
//! with API keys and their scopes on the broker: a remote `docproc worker`
//! must present a key over `grpcs://` with a CA file to run jobs.

use crate::common;

use std::path::{Path, PathBuf};

use common::{broker_process, excel_worker_process, TestServer};
use docproc_broker::auth::{generate, Scope};
use docproc_client::{Client, Error as ClientError, NewMessage};
use docproc_server::config::TlsFiles;

/// `docproc broker` over TLS with `keys`, and its port.
fn tls_broker(dir: &Path, cert: &Path, key: &Path, keys: &str) -> (common::BrokerProcess, String) {
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--api-keys",
        keys,
    ];
    let b = broker_process(dir, &tls);
    let port = b.url.rsplit(':').next().unwrap().to_string();
    (b, port)
}

/// A self-signed certificate for `localhost` (also the clients' CA file).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let files = TlsFiles {
        cert: cert.clone(),
        key,
    };
    let s = TestServer::start(move |c| c.tls = Some(files)).await;
    docproc_server::llm::install_crypto();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", s.addr.port());
    let r = client.get(&url).send().await.expect("https request");
    assert_eq!(r.status(), 200);
    // Without the CA the certificate is not trusted.
    let plain = reqwest::Client::builder().build().unwrap();
    assert!(plain.get(&url).send().await.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let raw = common::try_request(s.addr, "GET", "/healthz", &[], None).await;
    assert!(raw.is_none_or(|r| r.status != 200));
    // The command-line client takes the CA file.
    let server = format!("https://localhost:{}", s.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_docproc"))
            .args(["stats", "--server", &server, "--ca-file"])
            .arg(&cert)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_over_tls_takes_keys_with_scopes() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let (worker, we) = generate("worker", Scope::Worker).unwrap();
    let (reader, re) = generate("reader", Scope::Read).unwrap();
    let (admin, ae) = generate("admin", Scope::Admin).unwrap();
    let keys = format!("{},{},{}", we.entry(), re.entry(), ae.entry());
    let dir = tempfile::tempdir().unwrap();
    let (_b, port) = tls_broker(dir.path(), &cert, &key, &keys);
    let ca = cert.to_str().unwrap();
    let url = |k: &str| format!("grpcs://{k}@localhost:{port}?ca={ca}");

    let w = Client::connect(&url(&worker)).await.expect("TLS connect");
    let ids = w
        .produce(vec![NewMessage::new("q", b"hi".to_vec())])
        .await
        .expect("a worker key produces");
    assert_eq!(ids.len(), 1);
    match w.purge_dead("q", vec![], true).await {
        Err(ClientError::PermissionDenied(m)) => assert!(m.contains("admin"), "{m}"),
        other => panic!("a worker key must not purge: {other:?}"),
    }
    let r = Client::connect(&url(&reader)).await.unwrap();
    assert!(r.get(ids[0], false).await.is_ok(), "a read key reads");
    assert!(matches!(
        r.produce(vec![NewMessage::new("q", b"x".to_vec())]).await,
        Err(ClientError::PermissionDenied(_))
    ));
    let a = Client::connect(&url(&admin)).await.unwrap();
    assert!(a.purge_dead("q", vec![], true).await.is_ok());
    let anonymous = Client::connect(&format!("grpcs://localhost:{port}?ca={ca}"))
        .await
        .unwrap();
    assert!(matches!(
        anonymous.get(ids[0], false).await,
        Err(ClientError::Unauthenticated(_))
    ));
    let wrong = Client::connect(&url("dp_wrong")).await.unwrap();
    assert!(matches!(
        wrong.stats(None).await,
        Err(ClientError::Unauthenticated(_))
    ));
    // Plaintext to the TLS port fails.
    let plain = Client::connect(&format!("grpc://{worker}@localhost:{port}")).await;
    assert!(plain.is_err() || plain.unwrap().stats(None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_needs_its_key_to_run_jobs() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let (client_key, ce) = generate("api", Scope::Write).unwrap();
    let (worker_key, we) = generate("worker", Scope::Worker).unwrap();
    let keys = format!("{},{}", ce.entry(), we.entry());
    let dir = tempfile::tempdir().unwrap();
    let (_b, port) = tls_broker(dir.path(), &cert, &key, &keys);
    let ca = cert.to_str().unwrap().to_string();
    let server_queue = format!("grpcs://{client_key}@localhost:{port}?ca={ca}");
    let s = TestServer::start(move |c| {
        c.queue_url = Some(server_queue);
        c.pools = common::no_local_workers();
    })
    .await;
    // A worker without a key does not start.
    let keyless = std::process::Command::new(env!("CARGO_BIN_EXE_docproc"))
        .args([
            "worker",
            "--queue",
            &format!("grpcs://localhost:{port}?ca={ca}"),
        ])
        .arg("--data-dir")
        .arg(s.dir.path())
        .output()
        .unwrap();
    assert!(!keyless.status.success());
    assert!(
        String::from_utf8_lossy(&keyless.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&keyless.stderr)
    );
    let id = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    let _w = excel_worker_process(
        &format!("grpcs://{worker_key}@localhost:{port}?ca={ca}"),
        s.dir.path(),
    );
    s.wait(&id, "completed", 60).await;
}
