//! Parsing of queue URLs: `scheme://target?key=value&…`.

use std::time::Duration;

use super::error::{QueueError, Result};
use super::lease::RetryPolicy;

/// A parsed queue URL. Parameters are checked by the adapter that reads
/// them; one nobody reads is an error (a typo should not be silently ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl {
    /// The URL as given.
    pub raw: String,
    /// Lowercase scheme.
    pub scheme: String,
    /// What follows `scheme://`, up to `?`.
    pub target: String,
    /// Query parameters in order.
    pub params: Vec<(String, String)>,
}

impl QueueUrl {
    /// Splits a URL; fails when there is no `scheme://`.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = |reason: &str| QueueError::InvalidUrl {
            url: docproc_client::redact(raw),
            reason: reason.to_string(),
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://…, e.g. rocksdb://./data/queue"))?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("the scheme must be letters and digits"));
        }
        let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid(&format!("parameter {pair:?} has no value")))?;
            params.push((k.to_string(), v.to_string()));
        }
        Ok(Self {
            raw: raw.to_string(),
            scheme: scheme.to_ascii_lowercase(),
            target: target.to_string(),
            params,
        })
    }

    /// An `InvalidUrl` error about this URL.
    pub fn invalid(&self, reason: impl Into<String>) -> QueueError {
        QueueError::InvalidUrl {
            url: docproc_client::redact(&self.raw),
            reason: reason.into(),
        }
    }

    /// The value of a parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter parsed as milliseconds.
    pub fn millis(&self, key: &str) -> Result<Option<Duration>> {
        self.param(key)
            .map(|v| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| self.invalid(format!("{key} must be milliseconds, got {v:?}")))
            })
            .transpose()
    }

    /// Fails on any parameter not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<()> {
        match self
            .params
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(self.invalid(format!(
                "unknown parameter {k:?}; known: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The retry policy from `retry_base_ms` and `retry_max_ms` (defaults 1 s and 5 min).
    pub fn retry_policy(&self) -> Result<RetryPolicy> {
        let d = RetryPolicy::default();
        let p = RetryPolicy {
            base: self.millis("retry_base_ms")?.unwrap_or(d.base),
            max: self.millis("retry_max_ms")?.unwrap_or(d.max),
        };
        if p.max < p.base {
            return Err(self.invalid("retry_max_ms must not be below retry_base_ms"));
        }
        Ok(p)
    }
}

/// Parameters every adapter reads.
pub(crate) const COMMON_PARAMS: [&str; 2] = ["retry_base_ms", "retry_max_ms"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_scheme_target_and_params() {
        let u = QueueUrl::parse("RocksDB://./data/q?durability=batch&retry_base_ms=5").unwrap();
        assert_eq!(u.scheme, "rocksdb");
        assert_eq!(u.target, "./data/q");
        assert_eq!(u.param("durability"), Some("batch"));
        assert_eq!(
            u.millis("retry_base_ms").unwrap(),
            Some(Duration::from_millis(5))
        );
        assert!(u.only(&["durability", "retry_base_ms"]).is_ok());
        assert!(u.only(&["durability"]).is_err());
        let m = QueueUrl::parse("memory://").unwrap();
        assert_eq!((m.scheme.as_str(), m.target.as_str()), ("memory", ""));
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert!(QueueUrl::parse("./data").is_err());
        assert!(QueueUrl::parse("://x").is_err());
        assert!(QueueUrl::parse("a-b://x").is_err());
        assert!(QueueUrl::parse("memory://?flag").is_err());
        let u = QueueUrl::parse("memory://?retry_base_ms=soon").unwrap();
        assert!(u.retry_policy().is_err());
        let u = QueueUrl::parse("memory://?retry_base_ms=10&retry_max_ms=5").unwrap();
        assert!(u.retry_policy().is_err());
    }
}
