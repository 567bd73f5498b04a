//! The upload path of `POST /api/upload-async` on arbitrary requests: the
//! multipart parser, the spooling of the file under a size cap and the
//! rules of the text fields. A submission or a 4xx refusal, never a panic
//! or a 5xx; a refused upload leaves no file behind, an accepted one is
//! non-empty, within the cap and removed when dropped unpublished.
//!
//! Input: one byte choosing the content type (even: a well-formed
//! `multipart/form-data; boundary=X`, odd: the next `n` bytes as the
//! header), then the body.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Request};
use axum::response::IntoResponse;
use docproc_server::http::read_upload;
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer reaches the size cap.
const MAX: u64 = 4096;

struct World {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        dir: tempfile::tempdir().expect("tempdir"),
    })
}

fn left_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = if mode % 2 == 0 {
        ("multipart/form-data; boundary=X".as_bytes(), rest)
    } else {
        let n = (mode as usize / 2).min(rest.len());
        rest.split_at(n)
    };
    let Ok(req) = Request::builder()
        .method("POST")
        .uri("/api/upload-async")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()))
    else {
        return; // Not a header value a client could send.
    };
    let w = world();
    let dir = w.dir.path().to_path_buf();
    match w.rt.block_on(read_upload(req, dir.clone(), MAX)) {
        Ok(sub) => {
            let size = std::fs::metadata(sub.file.path())
                .expect("spooled file")
                .len();
            assert!(size > 0 && size <= MAX, "spooled {size} bytes");
            assert!(!sub.title.is_empty() && sub.title.chars().count() <= 120);
            assert!(sub
                .title
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ')));
            drop(sub);
            assert_eq!(left_in(&dir), 0, "an unpublished upload stayed");
        }
        Err(e) => {
            let status = e.into_response().status();
            assert!(status.is_client_error(), "answered {status}");
            assert_eq!(left_in(&dir), 0, "a refused upload stayed");
        }
    }
});
