//! A minimal W3C WebDriver client over HTTP for Debian's `chromedriver`
//! driving headless `chromium`: start a session, navigate, find elements,
//! click, type, read text, run a script, take a screenshot.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends ChromeDriver and the browsers it started: they run in the
    /// driver's own process group.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where Debian installs them; `make test` installs the packages.
fn binaries() -> Option<(&'static str, &'static str)> {
    let (c, d) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
    (Path::new(c).exists() && Path::new(d).exists()).then_some((c, d))
}

impl Browser {
    /// A headless Chromium session, or `None` when Chromium is not
    /// installed and `CI` is not set (under CI its absence fails the test).
    pub async fn start() -> Option<Self> {
        let Some((chromium, chromedriver)) = binaries() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but chromium/chromedriver are missing (make test installs them)"
            );
            eprintln!("skipping: chromium and chromedriver are not installed");
            return None;
        };
        let port = super::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        docproc_server::llm::install_crypto();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Some(Self {
            driver,
            http,
            base: format!("{base}/session/{session}"),
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            rb = rb.json(&body);
        }
        let r = rb.send().await.expect("webdriver call");
        let v: Value = r.json().await.unwrap();
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        let v = self
            .call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
        assert!(v.is_null(), "navigate: {v}");
    }

    /// The element for a CSS selector, waiting up to `secs` for it.
    pub async fn find(&self, css: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({ "using": "css selector", "value": css }),
                )
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css, 10).await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                json!({}),
            )
            .await;
        assert!(v.is_null(), "click {css}: {v}");
    }

    /// Types into an input (a path, for a file input).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css, 10).await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                json!({ "text": text }),
            )
            .await;
        assert!(v.is_null(), "type into {css}: {v}");
    }

    /// Runs a script and returns its value.
    pub async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": js, "args": [] }),
        )
        .await
    }

    /// The text of the first element matching `css` ("" when none).
    pub async fn text(&self, css: &str) -> String {
        let js = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            serde_json::to_string(css).unwrap()
        );
        self.script(&js).await.as_str().unwrap_or("").to_string()
    }

    /// Waits until the text at `css` satisfies `ok`; panics after `secs`.
    pub async fn wait_text(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css} is {t:?} after {secs} s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self, to: &Path) {
        use base64::Engine as _;
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap();
        std::fs::write(to, png).unwrap();
    }
}
