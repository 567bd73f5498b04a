//! Completion mail through a real SMTP server on loopback: Python's
//! aiosmtpd (installed by `make test`) writing what it receives into a
//! maildir, which the test reads.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use docproc_server::notify::EmailConfig;

struct Smtpd {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts aiosmtpd; `None` (outside CI) when Python or aiosmtpd is missing.
fn smtpd() -> Option<Smtpd> {
    let have = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 -m aiosmtpd is not available (make test installs it)"
        );
        eprintln!("skipped: python3 aiosmtpd is not installed (pip install aiosmtpd)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = tempfile::tempdir().unwrap();
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("mail"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn aiosmtpd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Smtpd {
        child,
        port,
        maildir,
    })
}

fn messages(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("mail").join("new"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_mail_arrives_at_the_smtp_server() {
    let Some(smtp) = smtpd() else { return };
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let s = TestServer::start(move |c| {
        let mut e = EmailConfig::new(url, "docproc <docproc@test.local>");
        e.public_url = Some("https://docproc.example.com".into());
        c.notify.email = Some(e);
    })
    .await;
    s.upload("a.csv", b"a,b\n1,2\n", &[("email", "not an address")])
        .await
        .assert_error(400, "invalid_argument");
    let id = s
        .submit(
            "report.csv",
            b"name,n\nx,1\n",
            &[("email", "ops@example.com")],
        )
        .await;
    s.wait(&id, "completed", 60).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        if let Some(m) = messages(smtp.maildir.path()).pop() {
            break m;
        }
        assert!(Instant::now() < deadline, "no mail arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(
        mail.contains("From: docproc <docproc@test.local>"),
        "{mail}"
    );
    assert!(
        mail.contains("Subject: docproc: report.csv completed"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("https://docproc.example.com/api/job/{id}/result")),
        "{mail}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = s.get(&format!("/api/job/{id}/status")).await.json();
        if st["email"]["state"] == "sent" {
            assert_eq!(st["email"]["to"], "ops@example.com");
            assert_eq!(st["email"]["attempts"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "mail state never sent: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages(smtp.maildir.path()).len(), 1, "exactly one mail");
    s.stop().await;
}
