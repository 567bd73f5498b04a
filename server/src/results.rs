//! The result store: one directory per job under `DATA_DIR/results/<job_id>/`
//! holding `result.json` (the extraction or analysis, schemas in the
//! README), `result.html` (its standalone page), `result.md` (its
//! Markdown) and `summary.json`.
//! Directories are removed by [`ResultStore::sweep`] once older than the
//! retention.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use docproc_queue::JobId;

/// Files of finished jobs.
#[derive(Debug, Clone)]
pub struct ResultStore {
    root: PathBuf,
}

/// A stored artifact opened by [`ResultStore::open_artifact`].
#[derive(Debug)]
pub enum Opened {
    /// The file and its length in bytes.
    File(tokio::fs::File, u64),
    /// Bytes made on demand.
    Bytes(Vec<u8>),
}

/// Which stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// `result.json`.
    Json,
    /// `result.html`.
    Html,
    /// `result.md`.
    Markdown,
}

impl ResultStore {
    /// A store rooted at `root` (created when missing).
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        crate::durable::create_private_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The directory of a job; `None` for ids that are not plain names
    /// (so no id can reach outside the store).
    pub fn dir(&self, id: &JobId) -> Option<PathBuf> {
        let ok = !id.0.is_empty()
            && id.0.len() <= 64
            && id
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| self.root.join(&id.0))
    }

    /// Reads one artifact of a job.
    pub async fn read(&self, id: &JobId, what: Artifact) -> std::io::Result<Vec<u8>> {
        match self.open_artifact(id, what).await? {
            Opened::File(mut f, len) => {
                use tokio::io::AsyncReadExt;
                let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                f.read_to_end(&mut out).await?;
                Ok(out)
            }
            Opened::Bytes(b) => Ok(b),
        }
    }

    /// Opens one artifact of a job to be streamed: the file and its
    /// length, or (the Markdown of a result stored before Markdown
    /// existed) the bytes rendered from its JSON.
    pub async fn open_artifact(&self, id: &JobId, what: Artifact) -> std::io::Result<Opened> {
        let dir = self
            .dir(id)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "bad job id"))?;
        let name = match what {
            Artifact::Json => "result.json",
            Artifact::Html => "result.html",
            Artifact::Markdown => "result.md",
        };
        let opened = async {
            let f = tokio::fs::File::open(dir.join(name)).await?;
            let len = f.metadata().await?.len();
            Ok::<_, std::io::Error>(Opened::File(f, len))
        };
        match opened.await {
            // A result stored before Markdown existed: rendered from its
            // JSON (off the runtime's threads), and not written back.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && what == Artifact::Markdown => {
                let json = tokio::fs::read(dir.join("result.json")).await?;
                tokio::task::spawn_blocking(move || {
                    let value: serde_json::Value = serde_json::from_slice(&json)
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                    Ok(Opened::Bytes(
                        docproc_extract::markdown::render(&value).into_bytes(),
                    ))
                })
                .await
                .map_err(std::io::Error::other)?
            }
            other => other,
        }
    }

    /// Writes a small JSON record next to a job's results (webhook and
    /// mail delivery records), atomically.
    pub async fn write_meta(
        &self,
        id: &JobId,
        name: &str,
        value: &serde_json::Value,
    ) -> std::io::Result<()> {
        let dir = self
            .dir(id)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "bad job id"))?;
        crate::durable::create_private_dir_all_async(dir.clone()).await?;
        crate::durable::write_atomic_async(
            dir.join(name),
            serde_json::to_vec(value).unwrap_or_default(),
        )
        .await
    }

    /// Reads a record [`write_meta`](Self::write_meta) wrote; `None` when
    /// there is none (or it cannot be read).
    pub async fn read_meta(&self, id: &JobId, name: &str) -> Option<serde_json::Value> {
        let bytes = tokio::fs::read(self.dir(id)?.join(name)).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes a job's results.
    pub async fn remove(&self, id: &JobId) {
        if let Some(dir) = self.dir(id) {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
    }

    /// Removes result directories last written before `now - retention`.
    /// Returns how many were removed.
    pub async fn sweep(&self, retention: Duration) -> std::io::Result<usize> {
        remove_older_than(&self.root, retention).await
    }
}

/// Removes the entries (files or directories) of `dir` last modified before
/// `now - retention`; answers how many. Several servers may share the data
/// directory and sweep it at once: an entry another one removed first is
/// skipped, not an error that ends the sweep.
pub async fn remove_older_than(dir: &Path, retention: Duration) -> std::io::Result<usize> {
    let cutoff = SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        if remove_if_older(&entry.path(), cutoff).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes `path` if it was last modified before `cutoff`; `false` when it
/// is newer or already gone.
async fn remove_if_older(path: &Path, cutoff: SystemTime) -> std::io::Result<bool> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let meta = match tokio::fs::symlink_metadata(path).await {
        Err(e) if gone(&e) => return Ok(false),
        meta => meta?,
    };
    if meta.modified()? >= cutoff {
        return Ok(false);
    }
    let removed = if meta.is_dir() {
        tokio::fs::remove_dir_all(path).await
    } else {
        tokio::fs::remove_file(path).await
    };
    // Gone meanwhile, or left for the next sweep.
    Ok(removed.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_cannot_escape_and_old_results_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ResultStore::open(tmp.path()).unwrap();
        for bad in ["../x", "a/b", "", ".", "..", "x y"] {
            assert!(store.dir(&JobId(bad.into())).is_none(), "{bad:?}");
        }
        let dir = store.dir(&"42".into()).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("result.json"), b"{}").unwrap();
        assert_eq!(
            store.read(&"42".into(), Artifact::Json).await.unwrap(),
            b"{}"
        );
        std::fs::write(tmp.path().join("orphan.upload"), b"x").unwrap();
        assert_eq!(store.sweep(Duration::from_secs(3600)).await.unwrap(), 0);
        assert_eq!(
            store.sweep(Duration::ZERO).await.unwrap(),
            2,
            "a directory and a file"
        );
        assert!(store.read(&"42".into(), Artifact::Json).await.is_err());
    }

    /// Another server sweeping the same directory removed the entry first.
    #[tokio::test]
    async fn an_entry_swept_by_someone_else_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let cutoff = SystemTime::now() + Duration::from_secs(60);
        let gone = tmp.path().join("gone");
        assert!(!remove_if_older(&gone, cutoff).await.unwrap());
        let file = tmp.path().join("old");
        std::fs::write(&file, b"x").unwrap();
        assert!(remove_if_older(&file, cutoff).await.unwrap());
        assert!(!file.exists());
        assert!(!remove_if_older(&file, cutoff).await.unwrap(), "twice");
    }
}
