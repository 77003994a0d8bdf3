//! Content-addressed executables: nimbus's uploaded artifacts and a supervisor's downloaded
//! ones, stored and checked the same way.
//!
//! Contract: an [`ArtifactStore`] is a directory of files named by the lowercase hex sha256 of
//! their bytes. [`ArtifactStore::writer`] streams bytes into a temporary file while hashing
//! them, refuses them if they exceed the limit or do not hash to the name they were sent
//! under, fsyncs, makes the file executable (0755) if the store is for executables it runs,
//! renames it into place and fsyncs the directory: a stored artifact is whole and correct, and
//! an artifact refused or dropped unfinished leaves nothing behind. A name that is not a sha256
//! (64 lowercase hex digits) is never stored nor looked up, so no name escapes the directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    squall_engine::auth::hex(&Sha256::digest(bytes))
}

/// True for 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The bytes of a sha256 given as 64 lowercase hex digits.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if !is_sha256(s) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Checks that `bytes` hash to `sha256`.
pub fn verify(sha256: &str, bytes: &[u8]) -> Result<(), ArtifactError> {
    let got = sha256_hex(bytes);
    if got != sha256 {
        return Err(ArtifactError::Mismatch { expected: sha256.to_string(), got, len: bytes.len() as u64 });
    }
    Ok(())
}

/// Why an artifact was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The name is not a sha256: the sender's fault.
    #[error("`{0}` is not a sha256 (64 lowercase hex digits)")]
    NotSha256(String),
    /// More bytes than the limit were sent: the sender's fault.
    #[error("the artifact is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The bytes do not hash to the name they were sent under: the sender's fault.
    #[error("the artifact's bytes hash to {got}, not to {expected} (received {len} bytes)")]
    Mismatch { expected: String, got: String, len: u64 },
    /// Writing the file (or making it durable) failed.
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Making the rename into the directory durable failed.
    #[error("cannot fsync {}: {source}", dir.display())]
    Sync { dir: PathBuf, source: std::io::Error },
    /// The writer was used after it failed.
    #[error("the artifact file is closed")]
    Closed,
}

impl ArtifactError {
    /// True if the bytes or their name were at fault, not this host.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ArtifactError::NotSha256(_) | ArtifactError::TooLarge { .. } | ArtifactError::Mismatch { .. }
        )
    }

    fn io(path: &Path, source: std::io::Error) -> ArtifactError {
        ArtifactError::Io { path: path.to_path_buf(), source }
    }
}

/// A directory of content-addressed artifacts (see the module docs).
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    /// Where artifacts are written before they are checked and renamed into `dir` (on the same
    /// file system).
    tmp: PathBuf,
    /// Stored files are made executable (0755).
    executable: bool,
}

impl ArtifactStore {
    /// The store in `dir`, writing its temporary files in `tmp`; both are created if needed.
    pub fn open(dir: &Path, tmp: &Path, executable: bool) -> std::io::Result<ArtifactStore> {
        for d in [dir, tmp] {
            fs::create_dir_all(d)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", d.display())))?;
        }
        Ok(ArtifactStore { dir: dir.to_path_buf(), tmp: tmp.to_path_buf(), executable })
    }

    /// Where the artifact `sha256` is (or would be) stored.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    pub fn has(&self, sha256: &str) -> bool {
        is_sha256(sha256) && self.path(sha256).is_file()
    }

    /// Deletes the stored artifact `sha256`, if it is stored (a name that is not a sha256 is
    /// never touched); true if it was. A running executable deleted keeps running.
    pub fn remove(&self, sha256: &str) -> std::io::Result<bool> {
        if !is_sha256(sha256) {
            return Ok(false);
        }
        match fs::remove_file(self.path(sha256)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The sha256 of every stored artifact.
    pub fn stored(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        let names = entries.flatten().filter_map(|e| e.file_name().into_string().ok());
        names.filter(|n| is_sha256(n)).collect()
    }

    /// The size of the stored artifact `sha256`, if it is stored.
    pub fn len_of(&self, sha256: &str) -> Option<u64> {
        if !is_sha256(sha256) {
            return None;
        }
        fs::metadata(self.path(sha256)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// A writer of the artifact `sha256` (at most `limit` bytes): see [`ArtifactWriter`].
    pub async fn writer(&self, sha256: &str, limit: u64) -> Result<ArtifactWriter<'_>, ArtifactError> {
        if !is_sha256(sha256) {
            return Err(ArtifactError::NotSha256(sha256.to_string()));
        }
        let tmp = self.tmp.join(temp_name(sha256));
        let file = tokio::fs::File::create(&tmp).await.map_err(|e| ArtifactError::io(&tmp, e))?;
        Ok(ArtifactWriter {
            store: self,
            sha256: sha256.to_string(),
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            len: 0,
            limit,
        })
    }

    /// Stores `bytes` as the artifact `sha256` (see [`writer`](Self::writer)); returns its path.
    pub async fn put(&self, sha256: &str, bytes: &[u8]) -> Result<PathBuf, ArtifactError> {
        let mut writer = self.writer(sha256, u64::MAX).await?;
        writer.write(bytes).await?;
        writer.finish().await?;
        Ok(self.path(sha256))
    }
}

/// A temporary file name, unique in this process.
fn temp_name(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(".{what}.{}.{}.tmp", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// An artifact being stored: [`write`](ArtifactWriter::write) its bytes in order, then
/// [`finish`](ArtifactWriter::finish) checks their hash and puts the file in place. Dropped
/// unfinished (or refused), it leaves nothing behind.
pub struct ArtifactWriter<'a> {
    store: &'a ArtifactStore,
    sha256: String,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    len: u64,
    limit: u64,
}

impl ArtifactWriter<'_> {
    /// Appends `chunk`; refused once more than the limit was sent.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        self.len += chunk.len() as u64;
        if self.len > self.limit {
            return Err(ArtifactError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        let Some(file) = self.file.as_mut() else {
            return Err(ArtifactError::Closed);
        };
        file.write_all(chunk).await.map_err(|e| ArtifactError::io(&self.tmp, e))
    }

    /// Checks the hash of what was written, makes it durable (and executable if the store
    /// is for executables) and puts it in place.
    pub async fn finish(mut self) -> Result<(), ArtifactError> {
        let got = squall_engine::auth::hex(&std::mem::take(&mut self.hasher).finalize());
        if got != self.sha256 {
            return Err(ArtifactError::Mismatch { expected: self.sha256.clone(), got, len: self.len });
        }
        let Some(mut file) = self.file.take() else {
            return Err(ArtifactError::Closed);
        };
        let executable = self.store.executable;
        if let Err(e) = async {
            file.flush().await?;
            if executable {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o755)).await?;
            }
            file.sync_all().await
        }
        .await
        {
            return Err(ArtifactError::io(&self.tmp, e));
        }
        drop(file);
        let path = self.store.path(&self.sha256);
        if let Err(e) = tokio::fs::rename(&self.tmp, &path).await {
            return Err(ArtifactError::io(&path, e));
        }
        let dir = self.store.dir.clone();
        let synced = tokio::task::spawn_blocking(move || {
            File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| (dir, e))
        })
        .await
        .map_err(|e| ArtifactError::io(&self.store.dir, std::io::Error::other(e)))?;
        synced.map_err(|(dir, source)| ArtifactError::Sync { dir, source })
    }
}

impl Drop for ArtifactWriter<'_> {
    fn drop(&mut self) {
        // After a successful rename this finds nothing to remove.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::state::tests::TempDir;

    async fn store(
        artifacts: &ArtifactStore,
        sha: &str,
        parts: &[&[u8]],
        limit: u64,
    ) -> Result<(), ArtifactError> {
        let mut writer = artifacts.writer(sha, limit).await?;
        for part in parts {
            writer.write(part).await?;
        }
        writer.finish().await
    }

    fn open(dir: &TempDir, executable: bool) -> ArtifactStore {
        ArtifactStore::open(&dir.path().join("artifacts"), &dir.path().join("tmp"), executable).unwrap()
    }

    #[tokio::test]
    async fn artifacts_are_stored_under_their_checked_hash() {
        let dir = TempDir::new("artifacts");
        let artifacts = open(&dir, false);
        let sha = sha256_hex(b"hello world");
        assert!(!artifacts.has(&sha));
        store(&artifacts, &sha, &[b"hello ", b"world"], 1 << 20).await.unwrap();
        assert!(artifacts.has(&sha));
        assert_eq!(artifacts.len_of(&sha), Some(11));
        assert_eq!(fs::read(artifacts.path(&sha)).unwrap(), b"hello world");

        let other = sha256_hex(b"something else");
        match store(&artifacts, &other, &[b"hello world"], 1 << 20).await {
            Err(e @ ArtifactError::Mismatch { .. }) => {
                assert!(e.is_refusal());
                let e = e.to_string();
                assert!(e.contains(&sha) && e.contains(&other), "{e}");
            }
            r => panic!("{r:?}"),
        }
        assert!(!artifacts.has(&other));
        match store(&artifacts, &sha, &[b"hello ", b"world"], 8).await {
            Err(e @ ArtifactError::TooLarge { .. }) => {
                assert!(e.to_string().contains("larger than 8 bytes"), "{e}")
            }
            r => panic!("{r:?}"),
        }
        match store(&artifacts, "../../etc/passwd", &[b"x"], 8).await {
            Err(e @ ArtifactError::NotSha256(_)) => assert!(e.to_string().contains("not a sha256"), "{e}"),
            r => panic!("{r:?}"),
        }
        assert!(!artifacts.has("../../etc/passwd"));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "refused uploads leave nothing");
        let artifacts = open(&dir, false);
        assert!(artifacts.has(&sha), "survives reopening");
    }

    #[tokio::test]
    async fn a_store_of_executables_makes_them_runnable() {
        let dir = TempDir::new("artifacts-exe");
        let artifacts = open(&dir, true);
        let sha = sha256_hex(b"#!/bin/sh\n");
        let path = artifacts.put(&sha, b"#!/bin/sh\n").await.unwrap();
        assert_eq!(path, artifacts.path(&sha));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(matches!(artifacts.put(&sha, b"other").await, Err(ArtifactError::Mismatch { .. })));
    }

    #[test]
    fn verify_checks_bytes_against_their_name() {
        let sha = sha256_hex(b"x");
        assert!(is_sha256(&sha) && verify(&sha, b"x").is_ok());
        assert!(matches!(verify(&sha, b"y"), Err(ArtifactError::Mismatch { len: 1, .. })));
        assert!(!is_sha256("../../etc/passwd") && !is_sha256(&sha.to_uppercase()));
    }
}
