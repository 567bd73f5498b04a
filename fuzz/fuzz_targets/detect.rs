//! Format detection (magic bytes, OLE and zip directories, the zip end
//! record's entry count) on arbitrary bytes: an answer or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;
use common::as_file;

fuzz_target!(|data: &[u8]| {
    let _ = docproc_extract::detect(&as_file(data));
});
