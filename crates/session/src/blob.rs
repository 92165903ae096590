//! Where recording chunks live. A directory in the embedded default; the trait leaves room for an
//! object store (S3 through the `object_store` crate) without touching the rest.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;

/// A boxed future, so that the store can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("recording store, {key}: {source}")]
pub struct StoreError {
    pub key: String,
    pub source: std::io::Error,
}

/// Objects addressed by keys like `<session>/<recording>/<offset>.zst`.
pub trait RecordingStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `data` durably under `key`, replacing what was there.
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> StoreFuture<'a, ()>;
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Bytes>;
    /// Removes every object whose key starts with `prefix/`.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ()>;
}

/// Objects as files under a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StoreError {
            key: root.display().to_string(),
            source,
        })?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys are made by the service from UUIDs and numbers; refuse anything else.
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'/' | b'_'));
        if safe {
            Ok(self.root.join(key))
        } else {
            Err(StoreError {
                key: key.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid key"),
            })
        }
    }
}

fn error(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError {
        key: key.to_owned(),
        source,
    }
}

impl RecordingStore for DirStore {
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(key)?;
            tokio::task::spawn_blocking(move || write_durably(&path, &data))
                .await
                .map_err(|e| error(key)(std::io::Error::other(e)))?
                .map_err(error(key))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Bytes> {
        Box::pin(async move {
            let path = self.path(key)?;
            tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(error(key))
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(prefix)?;
            match tokio::fs::remove_dir_all(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(error(prefix)(e)),
                _ => Ok(()),
            }
        })
    }
}

/// Temporary file, fsync, rename, fsync of the directory: after `put` returns, a crash of the
/// machine cannot take the chunk back (its index row is written only after).
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("key without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension("part");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(data)?;
    file.sync_data()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_round_trip_and_prefixes_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        store
            .put("s1/r1/0.zst", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        store
            .put("s1/r1/3.zst", Bytes::from_static(b"def"))
            .await
            .unwrap();
        assert_eq!(
            store.get("s1/r1/3.zst").await.unwrap(),
            Bytes::from_static(b"def")
        );
        store.delete_prefix("s1").await.unwrap();
        assert!(store.get("s1/r1/0.zst").await.is_err());
        store.delete_prefix("s1").await.unwrap();
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("store")).unwrap();
        for key in ["../x", "/etc/passwd", "a//b", "", "a/../../b", "a b"] {
            let err = store.get(key).await.unwrap_err();
            assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidInput, "{key}");
        }
    }
}
