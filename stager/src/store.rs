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
use crate::faults::FaultyStore;
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
    /// Injected faults (tests and chaos runs only; see [`crate::faults`]).
    faults: Option<Arc<FaultyStore>>,
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
        let stage = match Stage::resolve(url, options)? {
            Target::Remote(stage) => stage,
            Target::Local(path) => Stage::local(&path)?,
        };
        stage.with_env_faults()
    }

    /// With the `faults` feature, the faults `STRATA_TEST_STAGE_FAULTS` asks for.
    fn with_env_faults(self) -> Result<Stage> {
        #[cfg(feature = "faults")]
        if let Some(plan) = crate::faults::FaultPlan::from_env().map_err(|reason| StageError::InvalidUrl { url: self.url.to_string(), reason })? {
            tracing::warn!(?plan, "injecting object-store faults into the stage (a test build)");
            return Ok(self.with_faults(plan));
        }
        Ok(self)
    }

    /// This stage with `plan`'s faults injected into its requests.
    pub fn with_faults(mut self, plan: crate::faults::FaultPlan) -> Stage {
        let faulty = Arc::new(FaultyStore::new(self.store.clone(), plan));
        self.store = faulty.clone();
        self.faults = Some(faulty);
        self
    }

    /// Publishes the stage's request counts (and injected faults, if any).
    pub fn register_metrics(&self, registry: &strata_common::telemetry::Registry) {
        self.requests.register(registry);
        if let Some(f) = &self.faults {
            f.register(registry);
        }
    }

    /// As [`Stage::open`], but a local stage directory must exist already:
    /// for commands that only look, which must not create an empty stage
    /// where a path was mistyped.
    pub fn open_existing(url: &str, options: &BTreeMap<String, SecretString>) -> Result<Stage> {
        match Stage::resolve(url, options)? {
            Target::Remote(stage) => stage.with_env_faults(),
            Target::Local(path) if path.is_dir() => Stage::local(&path)?.with_env_faults(),
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
            return Ok(Target::Remote(Stage { store, backend: Backend::Remote, url: url.into(), requests: RequestCounts::default(), faults: None }));
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
        Ok(Stage { store: fs.clone(), backend: Backend::Local { fs, root }, url: url.into(), requests: RequestCounts::default(), faults: None })
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

    /// Runs `request` again, up to [`ATTEMPTS`] times in all, while it fails
    /// in a way another attempt may heal (a store error; not a lost race,
    /// not an absent object). For idempotent requests only.
    async fn retrying<T, F, Fut>(&self, what: &str, path: &Path, mut request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match request().await {
                Err(e) if worth_retrying(&e) && attempt + 1 < ATTEMPTS => {
                    tracing::debug!(%path, error = %e, attempt, "{what} failed; trying again");
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Writes `bytes` at `path`, replacing what is there. For data files,
    /// whose names are unique per batch and part.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.retrying("writing", path, || async {
            self.requests.add(Op::Put, 1);
            self.store.put(path, PutPayload::from(bytes.clone())).await.map_err(|e| StageError::store("writing", path, e))?;
            Ok(())
        })
        .await
    }

    /// Creates `path` only if absent; [`StageError::Conflict`] otherwise. A
    /// create that seemed to fail but landed (its answer lost) is found on
    /// the next attempt: the object holds exactly these bytes.
    pub async fn create(&self, path: &Path, bytes: Bytes) -> Result<()> {
        let mut attempt = 0;
        loop {
            self.requests.add(Op::Put, 1);
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            let e = match self.store.put_opts(path, PutPayload::from(bytes.clone()), opts).await {
                Ok(_) => return Ok(()),
                Err(e) => StageError::store("creating", path, e),
            };
            match e {
                StageError::Conflict { .. } if attempt > 0 => {
                    return if self.holding(path, &bytes).await?.is_some() { Ok(()) } else { Err(e) };
                }
                e if worth_retrying(&e) && attempt + 1 < ATTEMPTS => {
                    tracing::debug!(%path, error = %e, attempt, "creating failed; trying again");
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                }
                e => return Err(e),
            }
        }
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        self.retrying("reading", path, || async {
            self.requests.add(Op::Get, 1);
            let r = self.store.get(path).await.map_err(|e| StageError::store("reading", path, e))?;
            r.bytes().await.map_err(|e| StageError::store("reading", path, e))
        })
        .await
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
        self.retrying("checking", path, || async {
            self.requests.add(Op::Head, 1);
            match self.store.head(path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(StageError::store("checking", path, e)),
            }
        })
        .await
    }

    /// Deletes `path`; deleting what is not there is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        self.retrying("deleting", path, || async {
            self.requests.add(Op::Delete, 1);
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(StageError::store("deleting", path, e)),
            }
        })
        .await
    }

    /// Every object under `prefix` (recursively).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        self.retrying("listing", prefix, || async {
            let listed: Result<Vec<ObjectMeta>> = self.store.list(Some(prefix)).try_collect().await.map_err(|e| StageError::store("listing", prefix, e));
            let keys = listed.as_ref().map_or(0, Vec::len) as u64;
            self.requests.add(Op::List, 1 + keys.saturating_sub(1) / LIST_PAGE);
            listed
        })
        .await
    }

    /// The immediate sub-"directories" of `prefix`.
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<Path>> {
        self.retrying("listing", prefix, || async {
            self.requests.add(Op::List, 1);
            let r = self.store.list_with_delimiter(Some(prefix)).await.map_err(|e| StageError::store("listing", prefix, e))?;
            Ok(r.common_prefixes)
        })
        .await
    }

    /// An object's bytes with their version; `None` if absent.
    async fn get_versioned(&self, path: &Path) -> Result<Option<(Bytes, ObjectVersion)>> {
        self.retrying("reading", path, || async {
            self.requests.add(Op::Get, 1);
            let r = match self.store.get(path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(StageError::store("reading", path, e)),
            };
            let e_tag = r.meta.e_tag.clone();
            let bytes = r.bytes().await.map_err(|e| StageError::store("reading", path, e))?;
            let version = match &self.backend {
                Backend::Local { .. } => content_version(&bytes),
                Backend::Remote => ObjectVersion(e_tag.ok_or_else(|| StageError::Invalid {
                    what: format!("object store response for {path}"),
                    reason: "no ETag; the store does not support conditional updates".to_owned(),
                })?),
            };
            Ok(Some((bytes, version)))
        })
        .await
    }

    /// The object's version if it holds exactly `bytes`: a write whose
    /// answer was lost did land.
    async fn holding(&self, path: &Path, bytes: &[u8]) -> Result<Option<ObjectVersion>> {
        Ok(self.get_versioned(path).await?.filter(|(b, _)| b == bytes).map(|(_, v)| v))
    }

    /// Reads a JSON control object with its version; `None` if absent.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<Versioned<T>>> {
        let Some((bytes, version)) = self.get_versioned(path).await? else { return Ok(None) };
        let value =
            serde_json::from_slice(&bytes).map_err(|e| StageError::Corrupt { path: path.clone(), reason: format!("invalid JSON for this object: {e}") })?;
        Ok(Some(Versioned { value, version }))
    }

    /// Writes a JSON control object if it is still at `expected` (or, for
    /// `None`, still absent). Returns the new version; a lost race is
    /// [`StageError::Conflict`]. A write that seemed to fail is looked for
    /// before it is tried again, so one that landed with its answer lost
    /// counts as done rather than as a lost race on the next attempt.
    pub async fn put_json_if<T: Serialize>(&self, path: &Path, value: &T, expected: Option<&ObjectVersion>) -> Result<ObjectVersion> {
        let bytes =
            Bytes::from(serde_json::to_vec_pretty(value).map_err(|e| StageError::Invalid { what: format!("value for {path}"), reason: e.to_string() })?);
        let mut attempt = 0;
        loop {
            match self.swap(path, &bytes, expected).await {
                Ok(v) => return Ok(v),
                Err(e @ StageError::Conflict { .. }) if attempt > 0 => return self.holding(path, &bytes).await?.ok_or(e),
                Err(e) if worth_retrying(&e) => {
                    if let Ok(Some(v)) = self.holding(path, &bytes).await {
                        return Ok(v);
                    }
                    if attempt + 1 >= ATTEMPTS {
                        return Err(e);
                    }
                    tracing::debug!(%path, error = %e, attempt, "a conditional update failed; trying again");
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One conditional write of `bytes` at `path`.
    async fn swap(&self, path: &Path, bytes: &Bytes, expected: Option<&ObjectVersion>) -> Result<ObjectVersion> {
        self.requests.add(Op::Put, 1);
        match &self.backend {
            Backend::Remote => {
                let mode = match expected {
                    None => PutMode::Create,
                    Some(v) => PutMode::Update(UpdateVersion { e_tag: Some(v.0.clone()), version: None }),
                };
                let r = self
                    .store
                    .put_opts(path, PutPayload::from(bytes.clone()), PutOptions { mode, ..Default::default() })
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
                let (expected, key, bytes) = (expected.cloned(), path.clone(), bytes.clone());
                let write = async {
                    tokio::task::spawn_blocking(move || local_swap(&key, &target, &lock, &bytes, expected.as_ref()))
                        .await
                        .map_err(|e| StageError::Invalid { what: format!("update of {path}"), reason: e.to_string() })?
                };
                match &self.faults {
                    Some(f) => f.run_write(path, write).await,
                    None => write.await,
                }
            }
        }
    }
}

/// Attempts of a request that fails in a way another attempt may heal:
/// the services retry further at their own pace.
const ATTEMPTS: u32 = 3;

/// The wait before attempt `attempt + 1`: 100 ms, then 400 ms.
fn pause(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(100 * 4u64.pow(attempt))
}

/// A store error another attempt may heal (not a lost race, not an absent
/// object, not a refusal).
fn worth_retrying(e: &StageError) -> bool {
    matches!(e, StageError::Store { .. }) && e.is_retriable()
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

    use crate::faults::{FaultKind, FaultPlan};

    fn faulty(dir: &std::path::Path, kinds: Vec<FaultKind>) -> Stage {
        Stage::local(dir).unwrap().with_faults(FaultPlan { rate: 1.0, seed: 5, kinds })
    }

    #[tokio::test]
    async fn a_write_whose_answer_is_lost_counts_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let stage = faulty(dir.path(), vec![FaultKind::LostAck]);
        let path = Path::from("control/x.json");
        // Every write lands and is reported failed: found on the next look.
        let v1 = stage.put_json_if(&path, &serde_json::json!({"n": 1}), None).await.unwrap();
        let v2 = stage.put_json_if(&path, &serde_json::json!({"n": 2}), Some(&v1)).await.unwrap();
        stage.create(&Path::from("log/1.json"), Bytes::from_static(b"m")).await.unwrap();
        let clean = Stage::local(dir.path()).unwrap();
        let read = clean.get_json::<serde_json::Value>(&path).await.unwrap().unwrap();
        assert_eq!((read.value["n"].as_i64(), read.version), (Some(2), v2));
        // A lost race stays one: the object holds someone else's bytes.
        let e = stage.put_json_if(&path, &serde_json::json!({"n": 3}), Some(&v1)).await.unwrap_err();
        assert!(matches!(e, StageError::Conflict { .. }), "{e}");
        let e = stage.create(&Path::from("log/1.json"), Bytes::from_static(b"other")).await.unwrap_err();
        assert!(matches!(e, StageError::Conflict { .. }), "{e}");
    }

    #[tokio::test]
    async fn failing_requests_are_tried_three_times_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let stage = faulty(dir.path(), vec![FaultKind::Error]);
        let e = stage.put(&Path::from("a"), Bytes::from_static(b"x")).await.unwrap_err();
        assert!(e.is_retriable() && e.to_string().contains("injected error"), "{e}");
        assert_eq!(stage.requests().get(crate::requests::Op::Put), u64::from(ATTEMPTS));
        let e = stage.put_json_if(&Path::from("b.json"), &1, None).await.unwrap_err();
        assert!(e.to_string().contains("injected error"), "{e}");
    }

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
