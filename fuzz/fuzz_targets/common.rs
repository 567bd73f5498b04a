//! What the file-reading targets share: the input as a file, and bounds
//! small enough that one input cannot take a run's whole time.

use docproc_extract::Limits;

/// The input as a file (the extractors read files), one per process.
pub fn as_file(data: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("docproc-fuzz-{}", std::process::id()));
    std::fs::write(&path, data).expect("write the input");
    path
}

/// Small bounds for the extractors.
#[allow(dead_code)] // detect reads no limits
pub fn limits() -> Limits {
    Limits {
        max_cells: 200_000,
        max_pages: 50,
        max_stream_bytes: 8 << 20,
        max_page_text: 256 * 1024,
        ..Limits::default()
    }
}
