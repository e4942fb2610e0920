//! The [`Stage`] handle: one object store plus the few operations the format
//! needs, with the same semantics on every backend.
//!
//! | operation | S3 | local disk |
//! |---|---|---|
//! | [`Stage::put`] (data files) | PUT | write temp + fsync + rename |
//! | [`Stage::create`] (manifests) | PUT `If-None-Match: *` | hard link, fails if present |
//! | [`Stage::put_json_if`] (cursors, leases, specs) | PUT `If-Match: <etag>` | `flock` + compare + rename |
//!
//! object_store's `LocalFileSystem` implements `PutMode::Create` but not
//! `PutMode::Update`, so conditional updates on local disk are ours: every
//! conditional write of a key takes an exclusive `flock` on a lock file under
//! `{root}/_locks/`, re-reads the current object, compares its version with
//! the caller's, and only then renames the new bytes into place. All writers
//! of conditional keys go through this path, so compare-and-swap holds across
//! processes on one host — which is what a local-disk stage is (it does not
//! fence across hosts sharing a network file system; use S3 for that).
//!
//! An [`ObjectVersion`] is opaque. On S3 it is the ETag; on local disk it is
//! the SHA-256 of the content. A content hash rather than inode/mtime: inode
//! numbers are reused and mtimes are coarse, which would let a stale writer's
//! version match a newer object (ABA). Equal content means equal state, so a
//! content-hash match is always a safe swap.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_common::config::SecretString;

use crate::error::{Result, StageError};
use crate::requests::{Op, RequestCounts};

/// Opaque version of a conditionally written object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion(String);

impl ObjectVersion {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A value read from the stage with the version it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: ObjectVersion,
}

#[derive(Clone)]
enum Backend {
    Local { fs: Arc<LocalFileSystem>, root: PathBuf },
    Remote,
}

/// What a stage URL names, before it is opened.
enum Target {
    Remote(Stage),
    Local(PathBuf),
}

/// A handle on a stage. Cheap to clone.
#[derive(Clone)]
pub struct Stage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    url: Arc<str>,
    requests: RequestCounts,
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage").field("url", &self.url).finish()
    }
}

impl Stage {
    /// Opens the stage at `url`: `file:///abs/path`, a plain path (created if
    /// missing), or `s3://bucket[/prefix]`. S3 settings come from the `AWS_*`
    /// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`, …), overridden by `options`.
    pub fn open(url: &str, options: &BTreeMap<String, SecretString>) -> Result<Stage> {
        match Stage::resolve(url, options)? {
            Target::Remote(stage) => Ok(stage),
            Target::Local(path) => Stage::local(&path),
        }
    }

    /// As [`Stage::open`], but a local stage directory must exist already:
    /// for commands that only look, which must not create an empty stage
    /// where a path was mistyped.
    pub fn open_existing(url: &str, options: &BTreeMap<String, SecretString>) -> Result<Stage> {
        match Stage::resolve(url, options)? {
            Target::Remote(stage) => Ok(stage),
            Target::Local(path) if path.is_dir() => Stage::local(&path),
            Target::Local(path) => {
                Err(StageError::InvalidUrl { url: url.to_owned(), reason: format!("no stage here: directory {} does not exist", path.display()) })
            }
        }
    }

    /// Checks that `url` and `options` name a stage this build can open,
    /// without any I/O (a local directory need not exist yet).
    pub fn check_url(url: &str, options: &BTreeMap<String, SecretString>) -> Result<()> {
        Stage::resolve(url, options).map(drop)
    }

    /// What `url` names: a remote stage (built, no request made) or a
    /// local directory (not yet opened).
    fn resolve(url: &str, options: &BTreeMap<String, SecretString>) -> Result<Target> {
        let invalid = |reason: String| StageError::InvalidUrl { url: url.to_owned(), reason };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("missing bucket name".to_owned()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in options {
                let key = k.parse().map_err(|e: object_store::Error| invalid(format!("option {k:?}: {e}")))?;
                builder = builder.with_config(key, v.expose());
            }
            let s3 = builder.build().map_err(|e| invalid(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                let p = Path::parse(prefix).map_err(|e| invalid(format!("prefix {prefix:?}: {e}")))?;
                Arc::new(PrefixStore::new(s3, p))
            };
            return Ok(Target::Remote(Stage { store, backend: Backend::Remote, url: url.into(), requests: RequestCounts::default() }));
        }
        if !options.is_empty() {
            return Err(invalid("stage.options apply to s3:// stages only".to_owned()));
        }
        let path = if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid("a file:// URL needs an absolute path (file:///var/lib/strata); write a relative path without file://".to_owned()));
            }
            let u = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
            u.to_file_path().map_err(|_| invalid("not a local path".to_owned()))?
        } else if url.contains("://") {
            return Err(invalid("unsupported scheme: use file:///path, a plain path, or s3://bucket/prefix".to_owned()));
        } else {
            PathBuf::from(url)
        };
        Ok(Target::Local(path))
    }

    /// Opens (creating if needed) a stage directory on local disk.
    pub fn local(dir: &std::path::Path) -> Result<Stage> {
        let invalid = |reason: String| StageError::InvalidUrl { url: dir.display().to_string(), reason };
        std::fs::create_dir_all(dir).map_err(|e| invalid(format!("creating directory: {e}")))?;
        let root = std::fs::canonicalize(dir).map_err(|e| invalid(e.to_string()))?;
        // fsync: a manifest must be durable before the reader acknowledges its
        // LSN to PostgreSQL, as an S3 PUT is.
        let fs = Arc::new(LocalFileSystem::new_with_prefix(&root).map_err(|e| invalid(e.to_string()))?.with_fsync(true).with_automatic_cleanup(true));
        let url = format!("file://{}", root.display());
        Ok(Stage { store: fs.clone(), backend: Backend::Local { fs, root }, url: url.into(), requests: RequestCounts::default() })
    }

    /// Where another program finds the object at `key`: an absolute path on
    /// a local stage, `s3://bucket/prefix/key` on S3 (what DuckDB, pyarrow
    /// and Spark take).
    pub fn location(&self, key: &Path) -> String {
        match &self.backend {
            Backend::Local { root, .. } => root.join(key.as_ref()).display().to_string(),
            Backend::Remote => format!("{}/{}", self.url.trim_end_matches('/'), key.as_ref()),
        }
    }

    /// Whether the stage is a directory on local disk (whose requests cost
    /// nothing) rather than an object store.
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// The stage's URL (no credentials are ever part of it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying store, for bulk reads that need no stage semantics
    /// (its requests are not counted in [`Stage::requests`]).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The requests made through this handle and its clones.
    pub fn requests(&self) -> &RequestCounts {
        &self.requests
    }

    /// Writes `bytes` at `path`, replacing what is there. For data files,
    /// whose names are unique per batch and part.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.requests.add(Op::Put, 1);
        self.store.put(path, PutPayload::from(bytes)).await.map_err(|e| StageError::store("writing", path, e))?;
        Ok(())
    }

    /// Creates `path` only if absent; [`StageError::Conflict`] otherwise.
    pub async fn create(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.requests.add(Op::Put, 1);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.store.put_opts(path, PutPayload::from(bytes), opts).await.map_err(|e| StageError::store("creating", path, e))?;
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        self.requests.add(Op::Get, 1);
        let r = self.store.get(path).await.map_err(|e| StageError::store("reading", path, e))?;
        r.bytes().await.map_err(|e| StageError::store("reading", path, e))
    }

    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.get(path).await {
            Ok(b) => Ok(Some(b)),
            Err(StageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `path` exists (one HEAD request).
    pub async fn exists(&self, path: &Path) -> Result<bool> {
        self.requests.add(Op::Head, 1);
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StageError::store("checking", path, e)),
        }
    }

    /// Deletes `path`; deleting what is not there is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        self.requests.add(Op::Delete, 1);
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StageError::store("deleting", path, e)),
        }
    }

    /// Every object under `prefix` (recursively).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let listed: Result<Vec<ObjectMeta>> = self.store.list(Some(prefix)).try_collect().await.map_err(|e| StageError::store("listing", prefix, e));
        let keys = listed.as_ref().map_or(0, Vec::len) as u64;
        self.requests.add(Op::List, 1 + keys.saturating_sub(1) / LIST_PAGE);
        listed
    }

    /// The immediate sub-"directories" of `prefix`.
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<Path>> {
        self.requests.add(Op::List, 1);
        let r = self.store.list_with_delimiter(Some(prefix)).await.map_err(|e| StageError::store("listing", prefix, e))?;
        Ok(r.common_prefixes)
    }

    /// Reads a JSON control object with its version; `None` if absent.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<Versioned<T>>> {
        self.requests.add(Op::Get, 1);
        let (bytes, version) = match self.store.get(path).await {
            Ok(r) => {
                let e_tag = r.meta.e_tag.clone();
                let bytes = r.bytes().await.map_err(|e| StageError::store("reading", path, e))?;
                let version = match &self.backend {
                    Backend::Local { .. } => content_version(&bytes),
                    Backend::Remote => ObjectVersion(e_tag.ok_or_else(|| StageError::Invalid {
                        what: format!("object store response for {path}"),
                        reason: "no ETag; the store does not support conditional updates".to_owned(),
                    })?),
                };
                (bytes, version)
            }
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StageError::store("reading", path, e)),
        };
        let value =
            serde_json::from_slice(&bytes).map_err(|e| StageError::Corrupt { path: path.clone(), reason: format!("invalid JSON for this object: {e}") })?;
        Ok(Some(Versioned { value, version }))
    }

    /// Writes a JSON control object if it is still at `expected` (or, for
    /// `None`, still absent). Returns the new version; a lost race is
    /// [`StageError::Conflict`].
    pub async fn put_json_if<T: Serialize>(&self, path: &Path, value: &T, expected: Option<&ObjectVersion>) -> Result<ObjectVersion> {
        let bytes =
            Bytes::from(serde_json::to_vec_pretty(value).map_err(|e| StageError::Invalid { what: format!("value for {path}"), reason: e.to_string() })?);
        self.requests.add(Op::Put, 1);
        match &self.backend {
            Backend::Remote => {
                let mode = match expected {
                    None => PutMode::Create,
                    Some(v) => PutMode::Update(UpdateVersion { e_tag: Some(v.0.clone()), version: None }),
                };
                let r = self
                    .store
                    .put_opts(path, PutPayload::from(bytes), PutOptions { mode, ..Default::default() })
                    .await
                    .map_err(|e| StageError::store("updating", path, e))?;
                r.e_tag.map(ObjectVersion).ok_or_else(|| StageError::Invalid {
                    what: format!("object store response for {path}"),
                    reason: "no ETag; the store does not support conditional updates".to_owned(),
                })
            }
            Backend::Local { fs, root } => {
                let target = fs.path_to_filesystem(path).map_err(|e| StageError::store("updating", path, e))?;
                let lock = root.join("_locks").join(format!("{}.lock", &content_version(path.as_ref().as_bytes()).0[7..]));
                let expected = expected.cloned();
                let key = path.clone();
                tokio::task::spawn_blocking(move || local_swap(&key, &target, &lock, &bytes, expected.as_ref()))
                    .await
                    .map_err(|e| StageError::Invalid { what: format!("update of {path}"), reason: e.to_string() })?
            }
        }
    }
}

/// Keys per page of a listing (S3's page size).
const LIST_PAGE: u64 = 1000;

fn content_version(bytes: &[u8]) -> ObjectVersion {
    ObjectVersion(crate::manifest::checksum(bytes))
}

/// The local-disk compare-and-swap; see the module docs.
fn local_swap(key: &Path, target: &std::path::Path, lock_path: &std::path::Path, bytes: &[u8], expected: Option<&ObjectVersion>) -> Result<ObjectVersion> {
    use std::io::Write;
    let io = |what: &str, e: std::io::Error| StageError::Store {
        op: "updating",
        path: key.clone(),
        source: object_store::Error::Generic { store: "LocalFileSystem", source: format!("{what}: {e}").into() },
    };
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating lock directory", e))?;
    }
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(lock_path).map_err(|e| io("opening lock file", e))?;
    lock.lock().map_err(|e| io("locking", e))?;
    let current = match std::fs::read(target) {
        Ok(b) => Some(content_version(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading current version", e)),
    };
    if current.as_ref() != expected {
        return Err(StageError::Conflict { path: key.clone() });
    }
    let dir = target.parent().ok_or_else(|| io("resolving parent", std::io::ErrorKind::InvalidInput.into()))?;
    std::fs::create_dir_all(dir).map_err(|e| io("creating directory", e))?;
    // `name#digits` is how object_store marks in-progress files: listings skip it.
    let tmp = target.with_file_name(format!(
        "{}#{}",
        target.file_name().and_then(|n| n.to_str()).unwrap_or("object"),
        uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating temp file", e))?;
        f.write_all(bytes).map_err(|e| io("writing temp file", e))?;
        f.sync_all().map_err(|e| io("syncing temp file", e))?;
        std::fs::rename(&tmp, target).map_err(|e| io("renaming into place", e))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing directory", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    drop(lock);
    Ok(content_version(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_creates_a_missing_local_stage() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let url = missing.display().to_string();
        let e = Stage::open_existing(&url, &BTreeMap::new()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("does not exist"), "{e}");
        Stage::check_url(&url, &BTreeMap::new()).unwrap();
        assert!(Stage::check_url("gs://bucket/x", &BTreeMap::new()).is_err());
        assert!(!missing.exists(), "neither created it");
        Stage::open(&url, &BTreeMap::new()).unwrap();
        assert!(missing.is_dir());
        Stage::open_existing(&url, &BTreeMap::new()).unwrap();
    }
}
