//! The broker's key decoding on arbitrary bytes (what a damaged or foreign
//! database hands recovery): errors, never panics; keys it makes decode back.
#![no_main]

use docproc_broker::keys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = keys::decode_id(data);
    let _ = keys::decode_queue_key(data);
    let _ = keys::decode_final_key(data);
    let _ = keys::decode_expiry_key(data);
    let _ = keys::decode_dedup_value(data);
    if let Ok(name) = std::str::from_utf8(data) {
        if keys::validate_queue(name).is_ok() {
            let key = keys::queue_key(name, b"suffix");
            let (queue, rest) = keys::decode_queue_key(&key).expect("a key we made decodes");
            assert_eq!((queue, rest), (name, &b"suffix"[..]));
            let fin = keys::final_key(name, 5, 1_700_000_000_000, 42);
            assert_eq!(
                keys::decode_final_key(&fin).expect("a final key we made decodes"),
                (1_700_000_000_000, 42)
            );
        }
    }
});
