//! Key layout of every column family; pure encoding with no I/O.
//!
//! All integers are big-endian so that RocksDB's bytewise order is numeric
//! order. Queue names cannot contain `0x00` (see [`validate_queue`]), so it
//! separates a queue name from what follows.

use crate::error::{Error, Result};

/// Which stored blob of a message a blob key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Blob {
    /// The produced payload.
    Payload = 0,
    /// The result stored by the ack.
    Result = 1,
    /// The last progress stored by an extend.
    Progress = 2,
}

/// Longest queue name.
pub const MAX_QUEUE_LEN: usize = 128;

/// Queue names are 1..=128 characters of `A-Z a-z 0-9 . _ - :`.
pub fn validate_queue(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_QUEUE_LEN {
        return Err(Error::InvalidArgument(format!(
            "queue name must be 1 to {MAX_QUEUE_LEN} characters, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        return Err(Error::InvalidArgument(format!(
            "queue name {name:?} has {c:?}; allowed are A-Z a-z 0-9 . _ - :"
        )));
    }
    Ok(())
}

/// Longest owner name.
pub const MAX_OWNER_LEN: usize = 128;

/// Owners are 0..=128 bytes of printable characters (no control
/// characters, so `0x00` separates an owner from what follows); empty is
/// nobody.
pub fn validate_owner(owner: &str) -> Result<()> {
    if owner.len() > MAX_OWNER_LEN {
        return Err(Error::InvalidArgument(format!(
            "owner must be at most {MAX_OWNER_LEN} bytes, got {}",
            owner.len()
        )));
    }
    if owner.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "owner {owner:?} has a control character"
        )));
    }
    Ok(())
}

/// Key of a message in the `msgs`, `live` and `done` families.
pub fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Decodes an [`id_key`].
pub fn decode_id(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::Corrupt(format!("id key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// Key of one blob of a message in the `blobs` family.
pub fn blob_key(id: u64, blob: Blob) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8] = blob as u8;
    k
}

/// `queue 0x00 suffix`: keys of the `dead` and `dedup` families.
pub fn queue_key(queue: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(queue.len() + 1 + suffix.len());
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k.extend_from_slice(suffix);
    k
}

/// Splits a [`queue_key`] into queue and suffix.
pub fn decode_queue_key(key: &[u8]) -> Result<(&str, &[u8])> {
    let pos = key
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::Corrupt("queue key without separator".into()))?;
    let queue = std::str::from_utf8(&key[..pos])
        .map_err(|_| Error::Corrupt("queue key is not UTF-8".into()))?;
    Ok((queue, &key[pos + 1..]))
}

/// Key of a dead letter: `queue 0x00 id`.
pub fn dead_key(queue: &str, id: u64) -> Vec<u8> {
    queue_key(queue, &id.to_be_bytes())
}

/// Key of a final message in the `finals` index:
/// `queue 0x00 state created_at id`, so one queue's messages in one final
/// state sort by creation time.
pub fn final_key(queue: &str, state: u8, created_at_ms: u64, id: u64) -> Vec<u8> {
    let mut suffix = [0u8; 17];
    suffix[0] = state;
    suffix[1..9].copy_from_slice(&created_at_ms.to_be_bytes());
    suffix[9..].copy_from_slice(&id.to_be_bytes());
    queue_key(queue, &suffix)
}

/// Key of a final message in the `owners` index: `owner 0x00` then its
/// [`final_key`], so one owner's messages of one queue in one final state
/// sort by creation time.
pub fn owner_final_key(
    owner: &str,
    queue: &str,
    state: u8,
    created_at_ms: u64,
    id: u64,
) -> Vec<u8> {
    queue_key(owner, &final_key(queue, state, created_at_ms, id))
}

/// Decodes an [`owner_final_key`] into `(created_at, id)`.
pub fn decode_owner_final_key(key: &[u8]) -> Result<(u64, u64)> {
    let (_, rest) = decode_queue_key(key)?;
    decode_final_key(rest)
}

/// Decodes a [`final_key`] into `(created_at, id)`.
pub fn decode_final_key(key: &[u8]) -> Result<(u64, u64)> {
    let (_, suffix) = decode_queue_key(key)?;
    match suffix.len() {
        17 => decode_expiry_key(&suffix[1..]),
        n => Err(Error::Corrupt(format!("final index suffix of {n} bytes"))),
    }
}

/// Key of an entry in the `expiry` family: `expires_at id`.
pub fn expiry_key(expires_at_ms: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&expires_at_ms.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Decodes an [`expiry_key`] into `(expires_at, id)`.
pub fn decode_expiry_key(key: &[u8]) -> Result<(u64, u64)> {
    if key.len() != 16 {
        return Err(Error::Corrupt(format!("expiry key of {} bytes", key.len())));
    }
    Ok((decode_id(&key[..8])?, decode_id(&key[8..])?))
}

/// Value of a dedup entry: `id expires_at`.
pub fn dedup_value(id: u64, expires_at_ms: u64) -> [u8; 16] {
    expiry_key(id, expires_at_ms)
}

/// Decodes a [`dedup_value`] into `(id, expires_at)`.
pub fn decode_dedup_value(v: &[u8]) -> Result<(u64, u64)> {
    decode_expiry_key(v)
}

/// Meta key holding the highest id handed out.
pub const META_LAST_ID: &[u8] = b"last_id";

/// Meta key set once the `finals` index covers every final message.
pub const META_FINALS_INDEXED: &[u8] = b"finals_indexed";

/// Meta key of a queue's counters.
pub fn meta_counters(queue: &str) -> Vec<u8> {
    [b"counters/".as_slice(), queue.as_bytes()].concat()
}

/// Meta key of a queue's settings.
pub fn meta_queue_config(queue: &str) -> Vec<u8> {
    [b"queue/".as_slice(), queue.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn queue_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._:-]{1,40}"
    }

    proptest! {
        #[test]
        fn id_order_is_byte_order(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), id_key(a).cmp(&id_key(b)));
            prop_assert_eq!(decode_id(&id_key(a)).ok(), Some(a));
        }

        #[test]
        fn expiry_keys_sort_by_time_then_id(t1: u64, i1: u64, t2: u64, i2: u64) {
            prop_assert_eq!((t1, i1).cmp(&(t2, i2)), expiry_key(t1, i1).cmp(&expiry_key(t2, i2)));
            prop_assert_eq!(decode_expiry_key(&expiry_key(t1, i1)).ok(), Some((t1, i1)));
        }

        #[test]
        fn dead_keys_group_by_queue_and_sort_by_id(q in queue_name(), r in queue_name(), a: u64, b: u64) {
            prop_assert!(validate_queue(&q).is_ok());
            let (ka, kb) = (dead_key(&q, a), dead_key(&q, b));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            let (qq, suffix) = decode_queue_key(&ka).expect("a dead key decodes");
            prop_assert_eq!(qq, q.as_str());
            prop_assert_eq!(decode_id(suffix).ok(), Some(a));
            // A queue's keys never interleave with another queue's.
            if q != r {
                let prefix = queue_key(&q, b"");
                prop_assert!(!dead_key(&r, b).starts_with(&prefix));
            }
        }

        #[test]
        fn final_keys_sort_by_state_then_time_then_id(q in queue_name(), s1 in 0u8..8, s2 in 0u8..8, t1: u64, i1: u64, t2: u64, i2: u64) {
            let (a, b) = (final_key(&q, s1, t1, i1), final_key(&q, s2, t2, i2));
            prop_assert_eq!((s1, t1, i1).cmp(&(s2, t2, i2)), a.cmp(&b));
            prop_assert_eq!(decode_final_key(&a).ok(), Some((t1, i1)));
        }

        #[test]
        fn owner_keys_group_by_owner_then_sort_like_final_keys(o in "[^\\p{Cc}]{0,20}", p in "[^\\p{Cc}]{0,20}", q in queue_name(), s1 in 0u8..8, s2 in 0u8..8, t1: u64, i1: u64, t2: u64, i2: u64) {
            prop_assert!(validate_owner(&o).is_ok());
            let (a, b) = (owner_final_key(&o, &q, s1, t1, i1), owner_final_key(&o, &q, s2, t2, i2));
            prop_assert_eq!((s1, t1, i1).cmp(&(s2, t2, i2)), a.cmp(&b));
            prop_assert_eq!(decode_owner_final_key(&a).ok(), Some((t1, i1)));
            // One owner's range never holds another owner's keys.
            if o != p {
                let (lo, hi) = (owner_final_key(&o, &q, 0, 0, 0), owner_final_key(&o, &q, 8, 0, 0));
                let other = owner_final_key(&p, &q, s1, t1, i1);
                prop_assert!(other < lo || other >= hi);
            }
        }

        #[test]
        fn blob_keys_are_distinct(id: u64) {
            let keys = [Blob::Payload, Blob::Result, Blob::Progress].map(|b| blob_key(id, b));
            prop_assert!(keys[0] < keys[1] && keys[1] < keys[2]);
            prop_assert_eq!(&keys[0][..8], &id_key(id)[..]);
        }

        #[test]
        fn dedup_value_roundtrips(id: u64, exp: u64) {
            prop_assert_eq!(decode_dedup_value(&dedup_value(id, exp)).ok(), Some((id, exp)));
        }
    }

    #[test]
    fn queue_names_are_validated() {
        assert!(validate_queue("excel_processing").is_ok());
        assert!(validate_queue("a.b-c:d").is_ok());
        for bad in ["", "has space", "nul\0", "slash/x", "ünï", &"x".repeat(129)] {
            assert!(validate_queue(bad).is_err(), "{bad:?} accepted");
        }
        assert!(decode_queue_key(b"no-separator").is_err());
        assert!(validate_owner("").is_ok());
        assert!(validate_owner("team α / key-1").is_ok());
        assert!(validate_owner("nul\0").is_err());
        assert!(validate_owner("line\nbreak").is_err());
        assert!(validate_owner(&"o".repeat(129)).is_err());
        assert!(decode_id(b"short").is_err());
    }
}
