//! Layered settings of the `docproc` commands: built-in defaults, then a TOML
//! file, then environment variables, then command-line flags — every value
//! remembers where it came from so a bad one is reported by name and origin.
//!
//! [`SPECS`] is the one table of settings: its TOML key, environment names,
//! flag and the commands it applies to. `docproc.example.toml` lists them all
//! (a test keeps the two in step); [`build`] turns them into the configs.

pub mod build;
mod specs;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use specs::SPECS;

/// A command that reads settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `docproc serve`.
    Serve,
    /// `docproc worker`.
    Worker,
    /// `docproc broker`.
    Broker,
}

/// What a setting holds, for parsing its value from TOML and for flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text (paths, URLs, names).
    Str,
    /// A whole number.
    Int,
    /// `true` / `false`.
    Bool,
    /// A list: a TOML array, or comma-separated in the environment and flags.
    List,
}

/// One setting.
#[derive(Debug)]
pub struct Spec {
    /// Dotted TOML key (`workers.excel`).
    pub key: &'static str,
    /// Environment variables, first the `DOCPROC_*` name, then aliases.
    pub env: &'static [&'static str],
    /// Long flag without dashes.
    pub flag: &'static str,
    /// Commands it applies to.
    pub cmds: &'static [Cmd],
    /// Value kind.
    pub kind: Kind,
    /// Secret: never printed.
    pub secret: bool,
    /// One-line help, ending with the default in brackets.
    pub help: &'static str,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Nowhere: the built-in default.
    Default,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(&'static str),
    /// This flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(n) => write!(f, "environment variable {n}"),
            Source::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// A setting that cannot be used; startup stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key no setting has.
    #[error("unknown setting `{key}` in {path}")]
    Unknown {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// A value that does not parse or is out of range.
    #[error("bad setting `{key}` = {value:?} (from {origin}): {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value, or `<secret>`.
        value: String,
        /// Where it came from.
        origin: Source,
        /// What is wrong.
        message: String,
    },
    /// Settings that do not work together.
    #[error("{0}")]
    Conflict(String),
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Value {
    /// The text (lists comma-joined).
    pub raw: String,
    /// Its origin.
    pub source: Source,
}

/// The settings in effect: every value set by a file, the environment or a
/// flag; anything absent takes its default in [`build`].
#[derive(Debug, Clone)]
pub struct Settings {
    cmd: Cmd,
    values: BTreeMap<&'static str, Value>,
}

/// The spec of `key`; keys come from [`SPECS`], so a miss is a bug.
fn spec(key: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.key == key)
}

/// The value of `key` as the readers below look it up. A key that is not
/// in [`SPECS`] (a typo in the code) would read as "unset" forever; debug
/// builds, and so every test that builds a config, stop on it instead.
fn lookup<'a>(values: &'a BTreeMap<&'static str, Value>, key: &str) -> Option<&'a Value> {
    debug_assert!(spec(key).is_some(), "`{key}` is not a setting in SPECS");
    values.get(key)
}

impl Settings {
    /// Layers `file`, then the environment read through `env`, then
    /// `flags` (`(key, value)` pairs), for `cmd`.
    pub fn load(
        cmd: Cmd,
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&'static str, String)],
    ) -> Result<Self, SettingsError> {
        let mut values = BTreeMap::new();
        if let Some(path) = file {
            for (key, raw) in read_file(path)? {
                let s = spec(&key).ok_or_else(|| SettingsError::Unknown {
                    key: key.clone(),
                    path: path.to_path_buf(),
                })?;
                let source = Source::File(path.to_path_buf());
                values.insert(s.key, Value { raw, source });
            }
        }
        for s in SPECS.iter().filter(|s| s.cmds.contains(&cmd)) {
            // The first name set wins: DOCPROC_* before the seed's names.
            if let Some((name, raw)) = s
                .env
                .iter()
                .find_map(|n| env(n).filter(|v| !v.is_empty()).map(|v| (*n, v)))
            {
                values.insert(
                    s.key,
                    Value {
                        raw,
                        source: Source::Env(name),
                    },
                );
            }
        }
        for (key, raw) in flags {
            if let Some(s) = spec(key) {
                values.insert(
                    s.key,
                    Value {
                        raw: raw.clone(),
                        source: Source::Flag(s.flag),
                    },
                );
            }
        }
        Ok(Self { cmd, values })
    }

    /// The command these settings are for.
    pub fn cmd(&self) -> Cmd {
        self.cmd
    }

    /// The value of `key`, if set anywhere.
    pub fn get(&self, key: &str) -> Option<&Value> {
        lookup(&self.values, key)
    }

    /// Every value set, secrets shown as `<secret>`, with its origin.
    pub fn describe(&self) -> Vec<(&'static str, String, Source)> {
        self.values
            .iter()
            .map(|(k, v)| {
                let shown = if spec(k).is_some_and(|s| s.secret) {
                    "<secret>".to_string()
                } else {
                    v.raw.clone()
                };
                (*k, shown, v.source.clone())
            })
            .collect()
    }

    /// An error about the value of `key`.
    pub fn invalid(&self, key: &'static str, message: impl Into<String>) -> SettingsError {
        let (value, source) = match lookup(&self.values, key) {
            Some(v) if spec(key).is_some_and(|s| s.secret) => ("<secret>".into(), v.source.clone()),
            Some(v) => (v.raw.clone(), v.source.clone()),
            None => (String::new(), Source::Default),
        };
        SettingsError::Invalid {
            key,
            value,
            origin: source,
            message: message.into(),
        }
    }

    /// Text value.
    pub fn str(&self, key: &'static str) -> Option<String> {
        lookup(&self.values, key).map(|v| v.raw.clone())
    }

    /// Whole number in `range`.
    pub fn u64_in(
        &self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, SettingsError> {
        let Some(v) = lookup(&self.values, key) else {
            return Ok(None);
        };
        let n: u64 = v
            .raw
            .trim()
            .parse()
            .map_err(|_| self.invalid(key, "expected a whole number"))?;
        if !range.contains(&n) {
            return Err(self.invalid(key, format!("must be {} to {}", range.start(), range.end())));
        }
        Ok(Some(n))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn bool(&self, key: &'static str) -> Result<Option<bool>, SettingsError> {
        let Some(v) = lookup(&self.values, key) else {
            return Ok(None);
        };
        match v.raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(self.invalid(key, "expected true or false")),
        }
    }

    /// A list: comma-separated items, trimmed, empty ones dropped.
    pub fn list(&self, key: &'static str) -> Option<Vec<String>> {
        lookup(&self.values, key).map(|v| {
            v.raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    }
}

/// The file's settings as `(dotted key, text)`: tables nest, arrays become
/// comma-joined lists.
fn read_file(path: &Path) -> Result<Vec<(String, String)>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| SettingsError::Syntax {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })?;
    let mut out = Vec::new();
    flatten("", &table, path, &mut out)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    path: &Path,
    out: &mut Vec<(String, String)>,
) -> Result<(), SettingsError> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let text = match v {
            toml::Value::Table(t) => {
                flatten(&key, t, path, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(s) if !s.contains(',') => parts.push(s.clone()),
                        toml::Value::Integer(i) => parts.push(i.to_string()),
                        _ => {
                            return Err(SettingsError::Syntax {
                                path: path.to_path_buf(),
                                message: format!(
                                    "`{key}` must be a list of strings without commas"
                                ),
                            })
                        }
                    }
                }
                parts.join(",")
            }
            toml::Value::Datetime(d) => d.to_string(),
        };
        out.push((key, text));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
