//! Wake-ups on a local stage: the writer watches the stage directory and
//! wakes a stream's idle workers as soon as a batch manifest appears,
//! instead of leaving them to their next [`LOCAL_POLL`](super::LOCAL_POLL).
//!
//! ```text
//! {stage}/                     watched for `streams` appearing
//!   streams/                   watched for stream folders appearing
//!     {stream}/                watched for `log` appearing (the reader makes it)
//!       log/                   watched for {seq:020}.json: created (the commit's
//!                              hard link) or moved in (a rename) -> wake(stream, seq)
//! ```
//!
//! One inotify descriptor, read by one task; watches are added as folders
//! appear. A folder can fill between its creation event and its watch (the
//! reader's first manifest creates `{stream}/log/` with it), so a folder
//! that appeared while the writer ran is listed once its watch is in place,
//! and the newest manifest found there wakes its stream. Folders present at
//! start are not listed: workers look at the stage when they start anyway.
//!
//! A notification is a hint, exactly like an SQS wake-up: workers still
//! poll every `LOCAL_POLL`, so a lost event (the kernel's queue overflowed,
//! a watch could not be added) costs latency until the next poll, and a
//! spare one costs a failed file open; neither changes what is delivered.
//! When notifications cannot start (no inotify on this platform, or the
//! per-user watch or instance limit is reached), the writer says so once
//! and keeps polling.

use strata_stager::Stage;
use tokio_util::sync::CancellationToken;

use super::Wakeups;

/// Watches a local stage and wakes the workers of a stream whose next
/// batch was just committed.
pub struct Watcher {
    #[cfg(target_os = "linux")]
    tree: inotify_tree::Tree,
}

impl Watcher {
    /// The watcher of `stage`'s folders, `None` on a remote stage, or when
    /// notifications cannot start here (logged once: workers poll). Must be
    /// called inside the tokio runtime.
    pub fn new(stage: &Stage, wakeups: &Wakeups) -> Option<Watcher> {
        if !stage.is_local() {
            return None;
        }
        let streams = std::path::PathBuf::from(stage.location(&object_store::path::Path::from("streams")));
        let root = streams.parent()?.to_path_buf();
        #[cfg(target_os = "linux")]
        {
            match inotify_tree::Tree::new(&root, wakeups.clone()) {
                Ok(tree) => {
                    tracing::info!(stage = %root.display(), "watching the stage for new batches; idle workers also poll it");
                    Some(Watcher { tree })
                }
                Err(e) => {
                    tracing::warn!(stage = %root.display(), error = %e, poll = ?super::LOCAL_POLL, "cannot watch the stage for new batches; idle workers poll it");
                    None
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = wakeups;
            tracing::info!(stage = %root.display(), poll = ?super::LOCAL_POLL, "no file-system notifications on this platform; idle workers poll the stage");
            None
        }
    }

    /// Wakes workers as batches appear, until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        #[cfg(target_os = "linux")]
        self.tree.run(token).await;
        #[cfg(not(target_os = "linux"))]
        {
            let _ = self;
            token.cancelled().await;
        }
    }
}

#[cfg(target_os = "linux")]
mod inotify_tree {
    use std::collections::HashMap;
    use std::ffi::OsStr;
    use std::io;
    use std::path::{Path, PathBuf};

    use futures::StreamExt;
    use inotify::{EventMask, EventStream, Inotify, WatchMask, Watches};
    use strata_common::wakeup::Wakeup;
    use strata_stager::keys::{StreamKeys, decode_name};
    use tokio_util::sync::CancellationToken;

    use super::Wakeups;

    /// Only entries that appear: a hard link (how a manifest is committed)
    /// raises `CREATE`, a rename `MOVED_TO`. Watches are on folders only.
    const MASK: WatchMask = WatchMask::CREATE.union(WatchMask::MOVED_TO).union(WatchMask::ONLYDIR);
    /// Room for about 100 events per read: more wait in the kernel's queue.
    const BUFFER: usize = 4096;

    /// What a watched folder is, by its place in the stage's layout.
    enum Folder {
        Root,
        Streams,
        Stream(String),
        Log(StreamKeys),
    }

    /// The watched folders of one stage, by watch descriptor.
    pub(super) struct Tree {
        events: EventStream<Vec<u8>>,
        watches: Watches,
        folders: HashMap<i32, (Folder, PathBuf)>,
        wakeups: Wakeups,
        /// A watch could not be added (logged once).
        warned: bool,
    }

    impl Tree {
        /// Watches `root` and the stream folders already in it. Fails only
        /// when inotify or the watch of `root` cannot start.
        pub(super) fn new(root: &Path, wakeups: Wakeups) -> io::Result<Tree> {
            let events = Inotify::init()?.into_event_stream(vec![0; BUFFER])?;
            let watches = events.watches();
            let mut tree = Tree { events, watches, folders: HashMap::new(), wakeups, warned: false };
            tree.add(root, Folder::Root)?;
            tree.scan_streams(&root.join("streams"), false);
            Ok(tree)
        }

        pub(super) async fn run(mut self, token: CancellationToken) {
            loop {
                let event = tokio::select! {
                    _ = token.cancelled() => return,
                    event = self.events.next() => event,
                };
                match event {
                    Some(Ok(e)) => self.on_event(e.wd.get_watch_descriptor_id(), e.mask, e.name.as_deref()),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read stage notifications; idle workers poll the stage");
                        return;
                    }
                    None => return,
                }
            }
        }

        fn on_event(&mut self, wd: i32, mask: EventMask, name: Option<&OsStr>) {
            if mask.contains(EventMask::Q_OVERFLOW) {
                // Events were lost: the polls cover the batches, but a
                // folder that appeared meanwhile needs its watch.
                tracing::debug!("stage notifications overflowed; rescanning stream folders");
                let streams = self.folders.values().find(|(f, _)| matches!(f, Folder::Streams)).map(|(_, p)| p.clone());
                if let Some(streams) = streams {
                    self.scan_streams(&streams, false);
                }
                return;
            }
            if mask.contains(EventMask::IGNORED) {
                // The folder is gone (a dropped stream): its watch with it.
                self.folders.remove(&wd);
                return;
            }
            let (Some((folder, path)), Some(name)) = (self.folders.get(&wd), name.and_then(OsStr::to_str)) else {
                return;
            };
            let is_dir = mask.contains(EventMask::ISDIR);
            let child = path.join(name);
            match folder {
                Folder::Root if is_dir && name == "streams" => self.scan_streams(&child, true),
                Folder::Streams if is_dir => self.watch_stream(&child, name, true),
                Folder::Stream(stream) if is_dir && name == "log" => {
                    let stream = stream.clone();
                    self.watch_log(&child, &stream, true);
                }
                Folder::Log(keys) if !is_dir => {
                    if let Some(seq) = keys.parse_manifest_key(&object_store::path::Path::from(name)) {
                        self.wakeups.wake(&Wakeup::new(keys.stream(), seq));
                    }
                }
                _ => {}
            }
        }

        /// Watches `streams/` and every stream folder in it; `appeared`:
        /// they were created while the writer ran.
        fn scan_streams(&mut self, streams: &Path, appeared: bool) {
            if self.try_add(streams, Folder::Streams).is_none() {
                return;
            }
            for (path, segment) in subfolders(streams) {
                self.watch_stream(&path, &segment, appeared);
            }
        }

        fn watch_stream(&mut self, path: &Path, segment: &str, appeared: bool) {
            // Not a stream's folder: nothing the writer reads is in it.
            let Ok(stream) = decode_name(segment) else {
                return;
            };
            if self.try_add(path, Folder::Stream(stream.clone())).is_none() {
                return;
            }
            let log = path.join("log");
            if log.is_dir() {
                self.watch_log(&log, &stream, appeared);
            }
        }

        fn watch_log(&mut self, path: &Path, stream: &str, appeared: bool) {
            let Ok(keys) = StreamKeys::new(stream) else {
                return;
            };
            if self.try_add(path, Folder::Log(keys.clone())).is_none() || !appeared {
                return;
            }
            // Manifests committed before the watch was in place.
            let newest = files(path).filter_map(|name| keys.parse_manifest_key(&object_store::path::Path::from(name.as_str()))).max();
            if let Some(seq) = newest {
                self.wakeups.wake(&Wakeup::new(stream, seq));
            }
        }

        fn add(&mut self, path: &Path, folder: Folder) -> io::Result<()> {
            let wd = self.watches.add(path, MASK)?;
            self.folders.insert(wd.get_watch_descriptor_id(), (folder, path.to_path_buf()));
            Ok(())
        }

        /// [`Tree::add`], and a folder that cannot be watched is logged
        /// (once, unless it is simply gone) and left to the polls.
        fn try_add(&mut self, path: &Path, folder: Folder) -> Option<()> {
            match self.add(path, folder) {
                Ok(()) => Some(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    if !std::mem::replace(&mut self.warned, true) {
                        tracing::warn!(folder = %path.display(), error = %e, poll = ?super::super::LOCAL_POLL, "cannot watch a stage folder for new batches; its workers poll it");
                    }
                    None
                }
            }
        }
    }

    /// The folders in `dir` with their names; none when it cannot be read.
    fn subfolders(dir: &Path) -> impl Iterator<Item = (PathBuf, String)> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.path(), e.file_name().into_string().ok()?)))
    }

    /// The names of the entries in `dir` that are not folders.
    fn files(dir: &Path) -> impl Iterator<Item = String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use strata_stager::keys::StreamKeys;
    use tokio::time::Instant;

    use super::*;

    /// Polls so slow that only a notification wakes a waiter within the test.
    const SLOW_POLL: Duration = Duration::from_secs(10);
    /// A woken waiter returns well within this; a polling one does not.
    const PROMPT: Duration = Duration::from_secs(1);

    /// Slow-polling wake-ups fed by a watcher of `stage`, and the token
    /// that stops the watcher.
    fn watched(stage: &Stage) -> (Wakeups, CancellationToken) {
        let wakeups = Wakeups { poll: SLOW_POLL, ..Wakeups::polling().for_stage(true) };
        let token = CancellationToken::new();
        tokio::spawn(Watcher::new(stage, &wakeups).expect("watching the stage").run(token.clone()));
        (wakeups, token)
    }

    /// Commits manifest `seq` of `stream` the way the reader does (create,
    /// a hard link on local disk).
    async fn commit(stage: &Stage, stream: &str, seq: u64) {
        let key = StreamKeys::new(stream).unwrap().manifest(seq);
        stage.create(&key, bytes::Bytes::from_static(b"{}")).await.unwrap();
    }

    /// How long `stream`'s waiter waits with `during` running alongside,
    /// and the seq it was woken with.
    async fn woken_after(wakeups: &Wakeups, stream: &str, during: impl Future<Output = ()>) -> (Duration, u64) {
        let mut waiter = wakeups.waiter(stream);
        let token = CancellationToken::new();
        let t = Instant::now();
        let (woke, ()) = tokio::join!(tokio::time::timeout(PROMPT * 3, waiter.wait(&token, 1)), during);
        assert_eq!(woke, Ok(true), "{stream}: not woken within {:?}", PROMPT * 3);
        (t.elapsed(), *waiter.rx.borrow())
    }

    #[tokio::test]
    async fn an_idle_waiter_wakes_when_a_manifest_of_its_stream_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let stage = Stage::local(dir.path()).unwrap();
        // The stream and its log exist before the writer starts.
        commit(&stage, "main", 1).await;
        let (wakeups, token) = watched(&stage);
        // Another stream's batch does not wake it; its own does.
        let (waited, seq) = woken_after(&wakeups, "main", async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            commit(&stage, "other", 1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            commit(&stage, "main", 2).await;
        })
        .await;
        assert!(waited >= Duration::from_millis(400), "woken by another stream's batch after {waited:?}");
        assert!(waited < PROMPT, "woken {waited:?} after the commit");
        assert_eq!(seq, 2);
        token.cancel();
    }

    #[tokio::test]
    async fn a_stream_whose_log_appears_after_the_watcher_started_wakes_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        // A fresh stage: not even `streams/` yet.
        let stage = Stage::local(dir.path()).unwrap();
        let (wakeups, token) = watched(&stage);
        // The first commit creates streams/, streams/new/ and its log/ at
        // once, then links the manifest in: the watcher finds the folders
        // as they appear and catches the manifest either way.
        let (waited, seq) = woken_after(&wakeups, "new", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            commit(&stage, "new", 1).await;
        })
        .await;
        assert!(waited < PROMPT, "woken {waited:?} after the first commit");
        assert_eq!(seq, 1);
        // A stream whose folder exists without its log yet (the reader
        // holds its lease before it commits anything).
        stage.put(&object_store::path::Path::from("streams/later/reader.json"), bytes::Bytes::from_static(b"{}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (waited, seq) = woken_after(&wakeups, "later", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            commit(&stage, "later", 1).await;
        })
        .await;
        assert!(waited < PROMPT, "woken {waited:?} after the log appeared");
        assert_eq!(seq, 1);
        // And the next batch of that stream, through the log's own watch.
        let (waited, seq) = woken_after(&wakeups, "later", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            commit(&stage, "later", 2).await;
        })
        .await;
        assert!(waited < PROMPT, "woken {waited:?} after the second commit");
        assert_eq!(seq, 2);
        token.cancel();
    }
}
