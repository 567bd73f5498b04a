//! The CSV reader (encoding and separator sniffing, quoting, typed cells)
//! on arbitrary bytes: a document or an error, never a panic.
#![no_main]

use docproc_extract::{extract, Format};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{as_file, limits};

fuzz_target!(|data: &[u8]| {
    let _ = extract(&as_file(data), Format::Csv, &limits(), &mut |_, _, _| {});
});
