//! What the fidelity tests (`pdf::corpus`, `sheet::corpus`) share: the
//! folders and tools `make test` names in environment variables — required
//! when `CI` is set, the test skipped otherwise — and a corpus folder's
//! files in order.

use std::path::{Path, PathBuf};

/// The path in `var`; `None` outside CI when it is not set.
pub(crate) fn env_path(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set: make test fetches the corpora (scripts/fetch-corpus.sh) and installs the reference tools"
            );
            None
        }
    }
}

/// The files of the corpus folder `dir` that `keep` takes, sorted; at
/// least `at_least` of them (the manifest lists that many).
pub(crate) fn files(dir: &Path, keep: impl Fn(&Path) -> bool, at_least: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the corpus folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| keep(p))
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "the corpus in {} has {} files; the manifest lists more",
        dir.display(),
        files.len()
    );
    files
}
