//! Unpacked scene bundles, one folder per bundle, shared by every task of
//! every job that renders that bundle.
//!
//! Engines need real files: a bundle is exported from the store once
//! (every chunk verified on the way) into `scenes/<hash>/`, via a temporary
//! folder renamed into place, so a half-written scene is never used. A lock
//! per bundle keeps two tasks from unpacking the same scene at once. A
//! bundle fetched from a peer is written out while it arrives instead
//! (`<hash>.fetching`, see [`crate::store::Unpacking`]) and moved into place
//! under the same lock when the fetch ends; should that fail, the render
//! unpacks it as above.
//!
//! The files are not fsynced: they are a copy of what the store holds
//! durably, and the node empties this folder when it starts, so a crash
//! cannot leave a torn scene behind. Scenes no job needs any more are
//! removed by [`SceneCache::prune`] (see `cache.rs`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::hash::Hash;
use crate::store::{Store, StoreError, Unpacking};

/// The folder of unpacked bundles.
pub struct SceneCache {
    dir: PathBuf,
    locks: Mutex<HashMap<Hash, Arc<tokio::sync::Mutex<()>>>>,
    /// How many renders are using each unpacked scene.
    users: Arc<Mutex<HashMap<Hash, usize>>>,
}

/// An unpacked scene a render is using: not pruned while held.
pub struct SceneInUse {
    pub dir: PathBuf,
    bundle: Hash,
    users: Arc<Mutex<HashMap<Hash, usize>>>,
}

impl Drop for SceneInUse {
    fn drop(&mut self) {
        let mut users = super::lock(&self.users);
        if let Some(n) = users.get_mut(&self.bundle) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.bundle);
            }
        }
    }
}

impl SceneCache {
    pub fn new(dir: PathBuf) -> SceneCache {
        SceneCache {
            dir,
            locks: Mutex::new(HashMap::new()),
            users: Arc::default(),
        }
    }

    /// The folder holding bundle `bundle` unpacked, unpacking it if needed,
    /// kept until the returned use is dropped. The bundle must already be
    /// complete in `store`.
    pub async fn unpack(&self, store: &Arc<Store>, bundle: Hash) -> Result<SceneInUse, String> {
        let dir = self.dir.join(bundle.to_hex());
        let lock = self.lock_of(bundle);
        let _held = lock.lock().await;
        if dir.is_dir() {
            return Ok(self.use_of(bundle, dir));
        }
        let began = std::time::Instant::now();
        let tmp = self.dir.join(format!("{}.partial", bundle.to_hex()));
        let store = store.clone();
        let (tmp2, dir2) = (tmp.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&tmp2);
            std::fs::create_dir_all(&tmp2)
                .map_err(|e| format!("cannot create {}: {e}", tmp2.display()))?;
            store
                .export_bundle_unsynced(bundle, &tmp2)
                .map_err(|e| format!("cannot unpack the scene: {e}"))?;
            std::fs::rename(&tmp2, &dir2)
                .map_err(|e| format!("cannot move the scene into place: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
        tracing::debug!(
            "unpacked scene {} in {:?}",
            bundle.short(12),
            began.elapsed()
        );
        Ok(self.use_of(bundle, dir))
    }

    /// Starts unpacking `bundle` while it is fetched (see
    /// [`crate::store::Unpacking`]): `Ok(None)` when it is unpacked already,
    /// [`StoreError::NotFound`] while some of its manifests are still to
    /// come. Blocking; the fetch of `bundle` calls it, one at a time.
    pub fn begin_unpacking(
        &self,
        store: &Store,
        bundle: Hash,
    ) -> Result<Option<Unpacking>, StoreError> {
        if self.dir.join(bundle.to_hex()).is_dir() {
            return Ok(None);
        }
        let tmp = self.fetching_dir(bundle);
        let _ = std::fs::remove_dir_all(&tmp);
        store
            .begin_unpacking(bundle, &tmp)
            .map(Some)
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&tmp);
            })
    }

    /// Completes an unpacking begun with the fetch of `bundle`, now
    /// complete in `store`, and moves it into place. Should that fail, the
    /// folder is dropped and the render unpacks the scene as usual.
    pub async fn finish_unpacking(&self, store: &Arc<Store>, bundle: Hash, u: Arc<Unpacking>) {
        let lock = self.lock_of(bundle);
        let _held = lock.lock().await;
        let began = std::time::Instant::now();
        let dir = self.dir.join(bundle.to_hex());
        let store = store.clone();
        let moved = tokio::task::spawn_blocking(move || {
            if dir.is_dir() {
                return Err("it was unpacked meanwhile".to_string());
            }
            u.finish(&store).map_err(|e| e.to_string())?;
            std::fs::rename(u.dir(), &dir).map_err(|e| format!("cannot move it into place: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match moved {
            Ok(()) => tracing::debug!(
                "unpacked scene {} while fetching it; the rest in {:?}",
                bundle.short(12),
                began.elapsed()
            ),
            Err(e) => {
                tracing::debug!(
                    "unpacking scene {} while fetching it: {e}",
                    bundle.short(12)
                );
                self.abandon_unpacking(bundle).await;
            }
        }
    }

    /// Drops what an unpacking begun with the fetch of `bundle` wrote.
    pub async fn abandon_unpacking(&self, bundle: Hash) {
        let tmp = self.fetching_dir(bundle);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(tmp)).await;
    }

    /// Where the fetch of `bundle` unpacks it (not a bundle's name, so
    /// `prune` leaves it alone; emptied with the rest at start).
    fn fetching_dir(&self, bundle: Hash) -> PathBuf {
        self.dir.join(format!("{}.fetching", bundle.to_hex()))
    }

    /// The lock that keeps two tasks (or a task and a fetch, or `prune`)
    /// from writing or removing the unpacked `bundle` at once.
    fn lock_of(&self, bundle: Hash) -> Arc<tokio::sync::Mutex<()>> {
        super::lock(&self.locks).entry(bundle).or_default().clone()
    }

    /// Counts a render's use of an unpacked scene; under the bundle's lock.
    fn use_of(&self, bundle: Hash, dir: PathBuf) -> SceneInUse {
        *super::lock(&self.users).entry(bundle).or_default() += 1;
        SceneInUse {
            dir,
            bundle,
            users: self.users.clone(),
        }
    }

    /// Removes every unpacked scene not in `keep`, except those being
    /// unpacked or rendered from right now (a job submitted since `keep`
    /// was computed may already use its scene).
    pub async fn prune(&self, keep: &HashSet<Hash>) {
        let dir = self.dir.clone();
        let listed = tokio::task::spawn_blocking(move || unpacked(&dir))
            .await
            .unwrap_or_default();
        for (bundle, path) in listed {
            if keep.contains(&bundle) {
                continue;
            }
            let lock = self.lock_of(bundle);
            let Ok(_held) = lock.try_lock() else {
                continue; // being unpacked right now
            };
            if super::lock(&self.users).contains_key(&bundle) {
                continue;
            }
            if let Err(e) = tokio::fs::remove_dir_all(&path).await {
                tracing::warn!("removing the unpacked scene {}: {e}", path.display());
            }
            super::lock(&self.locks).remove(&bundle);
        }
    }
}

/// The unpacked scenes in `dir`, by bundle.
fn unpacked(dir: &std::path::Path) -> Vec<(Hash, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let hash = e.file_name().to_str()?.parse::<Hash>().ok()?;
            Some((hash, e.path()))
        })
        .collect()
}
