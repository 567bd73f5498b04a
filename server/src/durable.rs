//! Durable files: what the server acknowledges — an accepted upload, a
//! completed result, a delivery record, the webhook secret — is on disk
//! before anyone is told: the file's data fsynced, then the directory
//! that names it, so a power cut can lose neither the bytes nor the name.
//! Files are written under a temporary name and renamed, so a reader
//! never sees half of one. Files and directories are the owner's only
//! (0600 and 0700): uploads and results are other people's documents.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates `dir` and any missing parents readable by the owner only
/// (0700; directories already there keep their mode).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
}

/// [`create_private_dir_all`] off the async runtime's threads.
pub async fn create_private_dir_all_async(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || create_private_dir_all(&dir))
        .await
        .map_err(std::io::Error::other)?
}

/// Fsyncs a directory: the entries created, renamed or removed in it
/// survive a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `files` (name, bytes) into `dir` durably and atomically: each to
/// a temporary name, fsynced, renamed into place, then `dir` fsynced once
/// — and `dir`'s parent, for a directory that may just have been made.
/// Files are created readable by the owner only.
pub fn write_files(dir: &Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let result = (|| {
        for (name, bytes) in files {
            let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            staged.push((tmp.clone(), dir.join(name)));
            let mut f = opts.open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
        }
        for (tmp, path) in &staged {
            std::fs::rename(tmp, path)?;
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// [`write_files`] for one file at `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        ));
    };
    write_files(dir, &[(name, bytes)])
}

/// [`write_atomic`] off the async runtime's threads.
pub async fn write_atomic_async(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// [`sync_dir`] off the async runtime's threads.
pub async fn sync_dir_async(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || sync_dir(&dir))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_whole_under_their_names_and_leave_no_temporaries() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("job");
        std::fs::create_dir(&dir).expect("dir");
        write_files(&dir, &[("a.json", b"{}"), ("b.html", b"<p>")]).expect("write");
        write_atomic(&dir.join("a.json"), b"{\"v\":2}").expect("rewrite");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "b.html"]);
        assert_eq!(
            std::fs::read(dir.join("a.json")).expect("read"),
            b"{\"v\":2}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("b.html"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A directory that is not there: an error, nothing left behind.
        assert!(write_atomic(&tmp.path().join("missing/x.json"), b"x").is_err());
    }
}
