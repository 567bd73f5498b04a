//! The broker's stored records (protobuf) decoded from arbitrary bytes, as
//! recovery reads them: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    docproc_broker::fuzzing::decode_records(data);
});
