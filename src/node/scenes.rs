//! Unpacked scene bundles, one folder per bundle, shared by every task of
//! every job that renders that bundle.
//!
//! Engines need real files: a bundle is exported from the store once
//! (every chunk verified on the way) into `scenes/<hash>/`, via a temporary
//! folder renamed into place, so a half-written scene is never used. A lock
//! per bundle keeps two tasks from unpacking the same scene at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::hash::Hash;
use crate::store::Store;

/// The folder of unpacked bundles.
pub struct SceneCache {
    dir: PathBuf,
    locks: Mutex<HashMap<Hash, Arc<tokio::sync::Mutex<()>>>>,
}

impl SceneCache {
    pub fn new(dir: PathBuf) -> SceneCache {
        SceneCache {
            dir,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The folder holding bundle `bundle` unpacked, unpacking it if needed.
    /// The bundle must already be complete in `store`.
    pub async fn unpack(&self, store: &Arc<Store>, bundle: Hash) -> Result<PathBuf, String> {
        let dir = self.dir.join(bundle.to_hex());
        let lock = {
            let mut locks = super::lock(&self.locks);
            locks.entry(bundle).or_default().clone()
        };
        let _held = lock.lock().await;
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self.dir.join(format!("{}.partial", bundle.to_hex()));
        let store = store.clone();
        let (tmp2, dir2) = (tmp.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&tmp2);
            std::fs::create_dir_all(&tmp2)
                .map_err(|e| format!("cannot create {}: {e}", tmp2.display()))?;
            store
                .export_bundle(bundle, &tmp2)
                .map_err(|e| format!("cannot unpack the scene: {e}"))?;
            std::fs::rename(&tmp2, &dir2)
                .map_err(|e| format!("cannot move the scene into place: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })?;
        Ok(dir)
    }
}
