//! The CSV reader (encoding and separator sniffing, quoting, typed cells)
//! on arbitrary bytes: a document or an error, never a panic.
#![no_main]

use docproc_server::extract::{extract, Format, Limits};
use libfuzzer_sys::fuzz_target;

/// The input as a file (the extractors read files), one per process.
fn as_file(data: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("docproc-fuzz-{}", std::process::id()));
    std::fs::write(&path, data).expect("write the input");
    path
}
/// Small bounds, so one input cannot take the run's whole time.
fn limits() -> Limits {
    Limits {
        max_cells: 200_000,
        max_pages: 50,
        max_stream_bytes: 8 << 20,
        max_page_text: 256 * 1024,
        ..Limits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = extract(&as_file(data), Format::Csv, &limits(), &mut |_, _, _| {});
});
