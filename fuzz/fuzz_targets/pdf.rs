//! The PDF engine (lopdf's parser, fonts, CMaps, our content-stream
//! interpreter and layout) on arbitrary bytes: a document or an error,
//! never a panic. Seeded with the fidelity corpus by `make fuzz`.
#![no_main]

use docproc_extract::{extract, Format};
use libfuzzer_sys::fuzz_target;

mod common;
use common::{as_file, limits};

fuzz_target!(|data: &[u8]| {
    let _ = extract(&as_file(data), Format::Pdf, &limits(), &mut |_, _, _| {});
});
