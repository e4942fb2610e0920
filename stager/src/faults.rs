//! Injected object-store faults, for tests and chaos runs only (the
//! `faults` feature; release builds of the services leave it out).
//!
//! [`FaultyStore`] wraps the stage's object store and, for a configured
//! share of requests, fails them the ways a real store does:
//!
//! - `error`: the request fails before it reaches the store;
//! - `timeout`: it hangs for [`TIMEOUT`], then fails;
//! - `latency`: it succeeds after a spike of up to [`MAX_SPIKE`];
//! - `lost-ack`: a write succeeds, but its caller is told it failed — the
//!   worst case, which a manifest create, a cursor update or a lease
//!   renewal must survive without forking the log or losing a lease.
//!
//! A service built with the feature injects faults when
//! `STRATA_TEST_STAGE_FAULTS` says so, e.g.
//! `rate=0.05,seed=7,kinds=error+timeout+latency+lost-ack`; the draws are
//! seeded, so a run's sequence of faults is reproducible for a given
//! sequence of requests.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};
use strata_common::telemetry::{Registry, Value};

/// The environment variable that turns injection on.
pub const ENV: &str = "STRATA_TEST_STAGE_FAULTS";
/// How long an injected timeout hangs before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// The longest injected latency spike.
pub const MAX_SPIKE: Duration = Duration::from_millis(800);

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Error,
    Timeout,
    Latency,
    LostAck,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [FaultKind::Error, FaultKind::Timeout, FaultKind::Latency, FaultKind::LostAck];

    fn name(self) -> &'static str {
        match self {
            FaultKind::Error => "error",
            FaultKind::Timeout => "timeout",
            FaultKind::Latency => "latency",
            FaultKind::LostAck => "lost-ack",
        }
    }
}

/// What to inject: the share of requests, the seed, the kinds.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub rate: f64,
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
}

impl FaultPlan {
    /// Parses `rate=R,seed=S,kinds=K+K…` (kinds default to all).
    pub fn parse(text: &str) -> Result<FaultPlan, String> {
        let mut plan = FaultPlan { rate: 0.0, seed: 1, kinds: FaultKind::ALL.to_vec() };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("{ENV}: {part:?} is not key=value"))?;
            match key {
                "rate" => plan.rate = value.parse().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| format!("{ENV}: rate {value:?} is not in 0..1"))?,
                "seed" => plan.seed = value.parse().map_err(|_| format!("{ENV}: seed {value:?} is not a number"))?,
                "kinds" => {
                    plan.kinds = value
                        .split('+')
                        .map(|k| FaultKind::ALL.into_iter().find(|f| f.name() == k).ok_or_else(|| format!("{ENV}: unknown fault kind {k:?}")))
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("{ENV}: unknown key {key:?} (rate, seed, kinds)")),
            }
        }
        Ok(plan)
    }

    /// The plan in [`ENV`], if set.
    pub fn from_env() -> Result<Option<FaultPlan>, String> {
        std::env::var(ENV).ok().filter(|v| !v.trim().is_empty()).map(|v| FaultPlan::parse(&v)).transpose()
    }
}

/// The draws and the counts of what was injected, shared by clones.
struct Injector {
    plan: FaultPlan,
    state: Mutex<u64>,
    injected: [Value; 4],
}

impl Injector {
    /// A uniform draw in [0, 1) (xorshift64*).
    fn next(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fault for the next request, if any; `lost-ack` only for writes.
    fn draw(&self, write: bool) -> Option<FaultKind> {
        if self.next() >= self.plan.rate {
            return None;
        }
        let kinds: Vec<FaultKind> = self.plan.kinds.iter().copied().filter(|k| write || *k != FaultKind::LostAck).collect();
        let kind = *kinds.get((self.next() * kinds.len() as f64) as usize)?;
        self.injected[FaultKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)].inc_by(1);
        Some(kind)
    }

    /// Runs `request` (a `write` or not) with the fault drawn for it.
    async fn run<T>(&self, write: bool, path: &Path, request: impl Future<Output = Result<T>>) -> Result<T> {
        self.run_as(write, path, request, |e| e).await
    }

    /// [`Injector::run`] for a request whose errors are `E`, made from an
    /// injected store error by `error`.
    async fn run_as<T, E>(
        &self,
        write: bool,
        path: &Path,
        request: impl Future<Output = Result<T, E>>,
        error: impl Fn(object_store::Error) -> E,
    ) -> Result<T, E> {
        let failed = |what: &str| error(object_store::Error::Generic { store: "faults", source: format!("injected {what} on {path}").into() });
        match self.draw(write) {
            None => request.await,
            Some(FaultKind::Error) => Err(failed("error")),
            Some(FaultKind::Timeout) => {
                tokio::time::sleep(TIMEOUT).await;
                Err(failed("timeout"))
            }
            Some(FaultKind::Latency) => {
                tokio::time::sleep(MAX_SPIKE.mul_f64(self.next())).await;
                request.await
            }
            Some(FaultKind::LostAck) => {
                request.await?;
                Err(failed("lost acknowledgement (the write succeeded)"))
            }
        }
    }
}

/// An object store that injects faults into another's requests.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    injector: Arc<Injector>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> FaultyStore {
        let seed = plan.seed.max(1);
        let injected = FaultKind::ALL.map(|_| Value::default());
        FaultyStore { inner, injector: Arc::new(Injector { plan, state: Mutex::new(seed), injected }) }
    }

    /// Publishes `strata_stage_faults_injected_total{kind}`.
    pub fn register(&self, registry: &Registry) {
        for (kind, value) in FaultKind::ALL.iter().zip(&self.injector.injected) {
            registry.register_counter("strata_stage_faults_injected_total", "Object-store faults injected (tests only).", &[("kind", kind.name())], value);
        }
    }

    /// Runs a local-disk conditional write (which bypasses the store) with
    /// the fault drawn for it.
    pub(crate) async fn run_write<T>(&self, path: &Path, write: impl Future<Output = crate::error::Result<T>>) -> crate::error::Result<T> {
        self.injector.run_as(true, path, write, |e| crate::error::StageError::store("updating", path, e)).await
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({:?}, {})", self.injector.plan, self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.injector.run(true, location, self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.injector.run(true, location, self.inner.put_multipart_opts(location, opts)).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.injector.run(false, location, self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.injector.run(false, location, self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let (inner, injector) = (self.inner.clone(), self.injector.clone());
        // One request per location: each draws its own fault.
        locations
            .then(move |location| {
                let (inner, injector) = (inner.clone(), injector.clone());
                async move {
                    let location = location?;
                    let (one, fallback) = (location.clone(), location.clone());
                    let delete = async move { inner.delete_stream(futures::stream::once(async move { Ok(one) }).boxed()).next().await.unwrap_or(Ok(fallback)) };
                    injector.run(true, &location, delete).await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        match self.injector.draw(false) {
            Some(FaultKind::Error | FaultKind::Timeout) => {
                let e = object_store::Error::Generic { store: "faults", source: format!("injected error listing {path}").into() };
                futures::stream::once(async move { Err(e) }).boxed()
            }
            Some(FaultKind::Latency) => {
                let (spike, listing) = (MAX_SPIKE.mul_f64(self.injector.next()), self.inner.list(prefix));
                futures::stream::once(async move {
                    tokio::time::sleep(spike).await;
                    listing
                })
                .flatten()
                .boxed()
            }
            // A lost acknowledgement is drawn for writes only.
            Some(FaultKind::LostAck) | None => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let path = prefix.cloned().unwrap_or_default();
        self.injector.run(false, &path, self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.injector.run(true, to, self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.injector.run(true, to, self.inner.rename_opts(from, to, options)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_bad_ones_are_named() {
        let p = FaultPlan::parse("rate=0.05,seed=7,kinds=error+lost-ack").unwrap();
        assert_eq!(p, FaultPlan { rate: 0.05, seed: 7, kinds: vec![FaultKind::Error, FaultKind::LostAck] });
        assert_eq!(FaultPlan::parse("rate=0.1").unwrap().kinds.len(), 4);
        for (bad, named) in [("rate=2", "rate"), ("kinds=flaky", "flaky"), ("speed=1", "speed"), ("rate", "key=value")] {
            assert!(FaultPlan::parse(bad).unwrap_err().contains(named), "{bad}");
        }
    }

    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn faults_come_at_the_rate_and_a_lost_ack_still_writes() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let store = FaultyStore::new(inner.clone(), FaultPlan { rate: 0.2, seed: 3, kinds: vec![FaultKind::Error, FaultKind::LostAck] });
        let (mut failed, mut landed_anyway) = (0, 0);
        for i in 0..500 {
            let path = Path::from(format!("k/{i}"));
            if store.put_opts(&path, PutPayload::from_static(b"x"), PutOptions::default()).await.is_err() {
                failed += 1;
                landed_anyway += usize::from(inner.head(&path).await.is_ok());
            }
        }
        assert!((60..140).contains(&failed), "about 20% of 500 fail: {failed}");
        assert!(landed_anyway > 20 && landed_anyway < failed, "some failures were lost acknowledgements: {landed_anyway} of {failed}");
    }
}
