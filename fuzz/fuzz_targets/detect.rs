//! Format detection (magic bytes, OLE and zip directories, the zip end
//! record's entry count) on arbitrary bytes: an answer or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The input as a file (the extractors read files), one per process.
fn as_file(data: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("docproc-fuzz-{}", std::process::id()));
    std::fs::write(&path, data).expect("write the input");
    path
}

fuzz_target!(|data: &[u8]| {
    let _ = docproc_server::extract::detect(&as_file(data));
});
