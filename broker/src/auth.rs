//! API keys: parsing of configured key hashes, constant-time verification of
//! presented bearer keys, scopes, and making new keys. The HTTP server and
//! the gRPC service share this one implementation.
//!
//! A key is 32 random bytes shown as `dp_<base64url>`; only its SHA-256 is
//! configured (`NAME:SCOPE:sha256:HEX`), so a leaked config file does not
//! leak keys. Keys are long random strings, so one fast hash is enough (no
//! password stretching), and every configured hash is compared in constant
//! time, whichever matches.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;

/// What a key may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Look: job status, lists, stats, results, events, metrics, dashboard.
    Read,
    /// A worker: also produce, consume, ack, nack, extend leases.
    Worker,
    /// A client: also upload, cancel, requeue dead jobs.
    Write,
    /// Everything: also purge dead jobs and configure queues.
    Admin,
}

impl Scope {
    /// The scope's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Worker => "worker",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "worker" => Ok(Scope::Worker),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?} (read, worker, write or admin)"
            )),
        }
    }
}

/// One configured key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its name, for logs and metrics.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    hash: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The configured keys; empty means no authentication.
#[derive(Debug, Clone, Default)]
pub struct Keys(Arc<Vec<ApiKey>>);

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equality whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl ApiKey {
    /// Parses `NAME:SCOPE:sha256:HEX`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let parts: Vec<&str> = entry.trim().split(':').collect();
        let [name, scope, algo, digest] = parts.as_slice() else {
            return Err("expected NAME:SCOPE:sha256:HEX (see `docproc key new`)".into());
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "key name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        if *algo != "sha256" {
            return Err(format!("unknown hash {algo:?}; only sha256 is supported"));
        }
        let hash = unhex(&digest.to_ascii_lowercase())
            .ok_or_else(|| format!("key {name:?}: the hash must be 64 hex digits"))?;
        Ok(Self {
            name: (*name).to_string(),
            scope: scope.parse()?,
            hash,
        })
    }

    /// The configuration entry of this key.
    pub fn entry(&self) -> String {
        format!("{}:{}:sha256:{}", self.name, self.scope, hex(&self.hash))
    }
}

impl Keys {
    /// Parses configuration entries; names must be unique.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut keys: Vec<ApiKey> = Vec::with_capacity(entries.len());
        for e in entries {
            let k = ApiKey::parse(e)?;
            if keys.iter().any(|o| o.name == k.name) {
                return Err(format!("key name {:?} is used twice", k.name));
            }
            if keys.iter().any(|o| o.hash == k.hash) {
                return Err(format!("key {:?} has the same hash as another", k.name));
            }
            keys.push(k);
        }
        Ok(Self(Arc::new(keys)))
    }

    /// No keys: requests are not authenticated.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The key `presented` is, if any. Every configured hash is compared,
    /// in constant time, whether or not an earlier one matched.
    pub fn verify(&self, presented: &str) -> Option<&ApiKey> {
        let h = sha256(presented.as_bytes());
        let mut found = None;
        for k in self.0.iter() {
            if ct_eq(&k.hash, &h) && found.is_none() {
                found = Some(k);
            }
        }
        found
    }

    /// Checks an `authorization` header value (`Bearer KEY`) against `need`.
    pub fn authorize(&self, header: Option<&str>, need: Scope) -> Result<Option<&ApiKey>, Denied> {
        if self.is_empty() {
            return Ok(None);
        }
        let presented = header.and_then(bearer).ok_or(Denied::Missing)?;
        let key = self.verify(presented).ok_or(Denied::Unknown)?;
        if key.scope < need {
            return Err(Denied::Scope {
                name: key.name.clone(),
                has: key.scope,
                need,
            });
        }
        Ok(Some(key))
    }
}

/// The key of an `Authorization: Bearer KEY` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|k| !k.is_empty())
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `authorization: Bearer …`.
    #[error("an API key is required (authorization: Bearer KEY)")]
    Missing,
    /// A key that is not configured.
    #[error("unknown API key")]
    Unknown,
    /// A key whose scope is too narrow.
    #[error("API key {name:?} has scope {has}; this needs {need}")]
    Scope {
        /// The key's name.
        name: String,
        /// Its scope.
        has: Scope,
        /// The scope needed.
        need: Scope,
    },
}

impl Denied {
    /// 401 (no or unknown key) versus 403 (known key, too narrow).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Denied::Scope { .. })
    }
}

/// A new random key and its configuration entry.
pub fn generate(name: &str, scope: Scope) -> Result<(String, ApiKey), String> {
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| "the system random generator failed".to_string())?;
    let key = format!(
        "dp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let entry = ApiKey::parse(&format!(
        "{name}:{scope}:sha256:{}",
        hex(&sha256(key.as_bytes()))
    ))?;
    Ok((key, entry))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_with_their_scope() {
        let (k1, e1) = generate("ci", Scope::Write).unwrap();
        let (k2, e2) = generate("dash", Scope::Read).unwrap();
        let keys = Keys::parse(&[e1.entry(), e2.entry()]).unwrap();
        assert_eq!(keys.verify(&k1).unwrap().name, "ci");
        assert_eq!(keys.verify(&k2).unwrap().scope, Scope::Read);
        assert!(keys.verify("dp_wrong").is_none());
        assert!(keys.verify(&k1[..k1.len() - 1]).is_none());
        let auth = |h: &str, s| {
            keys.authorize(Some(h), s)
                .map(|k| k.map(|k| k.name.clone()))
        };
        assert_eq!(
            auth(&format!("Bearer {k1}"), Scope::Write),
            Ok(Some("ci".into()))
        );
        assert_eq!(
            auth(&format!("bearer  {k2}"), Scope::Read),
            Ok(Some("dash".into()))
        );
        assert!(auth(&format!("Bearer {k2}"), Scope::Write)
            .unwrap_err()
            .is_forbidden());
        assert_eq!(
            auth(&format!("Basic {k1}"), Scope::Read),
            Err(Denied::Missing)
        );
        assert_eq!(auth("Bearer nope", Scope::Read), Err(Denied::Unknown));
        assert_eq!(
            keys.authorize(None, Scope::Read).unwrap_err(),
            Denied::Missing
        );
        assert_eq!(Keys::default().authorize(None, Scope::Admin), Ok(None));
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let h = "a".repeat(64);
        assert!(ApiKey::parse(&format!("ci:write:sha256:{h}")).is_ok());
        for bad in [
            "ci:write".to_string(),
            format!("ci:owner:sha256:{h}"),
            format!("ci:write:md5:{h}"),
            "ci:write:sha256:abc".to_string(),
            format!("c i:write:sha256:{h}"),
            format!(":write:sha256:{h}"),
        ] {
            assert!(ApiKey::parse(&bad).is_err(), "{bad}");
        }
        let dup = format!("ci:write:sha256:{h}");
        assert!(Keys::parse(&[dup.clone(), dup]).is_err());
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Read < Scope::Worker && Scope::Worker < Scope::Write);
        assert!(Scope::Write < Scope::Admin);
    }
}
