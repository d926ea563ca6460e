//! What a node's hardware is doing, sampled for heartbeats and the page.
//!
//! A [`Sampler`] keeps its `sysinfo` handles between samples (CPU usage is a
//! difference between two refreshes, and re-enumerating disks and GPUs each
//! second would cost more than the node itself). GPUs come from NVML where
//! the NVIDIA driver is installed, else from sysinfo's GPU data (Linux DRM,
//! Windows, macOS; see [`gpu`]); where none is visible the list is empty,
//! never an error. Each sysinfo part that cannot be read on this
//! platform reads as zero rather than stopping the node. The sampler is not
//! `Send` (the NVML handle is a raw pointer), so it lives on one thread.

pub mod gpu;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sysinfo::{Disks, Gpus, System};

/// One GPU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub name: String,
    pub memory_total: u64,
    pub memory_used: u64,
    /// Percent busy, where the driver tells.
    pub usage: Option<f32>,
}

/// One sample of a node's hardware.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Percent of all cores, 0..=100.
    pub cpu: f32,
    pub cores: u32,
    pub memory_used: u64,
    pub memory_total: u64,
    /// One-minute load average.
    pub load: f32,
    /// Free and total bytes on the disk holding the data directory.
    pub disk_free: u64,
    pub disk_total: u64,
    pub gpus: Vec<GpuSample>,
}

/// Takes samples.
pub struct Sampler {
    system: Option<System>,
    disks: Option<Disks>,
    gpus: Option<Gpus>,
    nvml: Option<gpu::Nvml>,
    data_dir: PathBuf,
}

impl Sampler {
    /// A sampler reporting the disk that holds `data_dir`.
    pub fn new(data_dir: &Path) -> Sampler {
        let mut system = System::new().ok();
        if let Some(s) = system.as_mut() {
            s.refresh_cpu_usage();
        }
        Sampler {
            system,
            disks: Disks::new_with_refreshed_list().ok(),
            gpus: Gpus::new_with_refreshed_list().ok(),
            nvml: gpu::Nvml::load(),
            data_dir: data_dir
                .canonicalize()
                .unwrap_or_else(|_| data_dir.to_path_buf()),
        }
    }

    /// A fresh sample.
    pub fn sample(&mut self) -> Telemetry {
        let (disk_free, disk_total) = self.disk();
        let mut gpus = self
            .nvml
            .as_ref()
            .map(gpu::Nvml::devices)
            .unwrap_or_default();
        if gpus.is_empty() {
            gpus = self.gpus.as_mut().map(sample_gpus).unwrap_or_default();
        }
        let load = System::load_average().map(|l| l.one as f32).unwrap_or(0.0);
        let mut t = Telemetry {
            load,
            disk_free,
            disk_total,
            gpus,
            ..Telemetry::default()
        };
        if let Some(s) = self.system.as_mut() {
            s.refresh_cpu_usage();
            s.refresh_memory();
            t.cpu = s.global_cpu_usage();
            t.cores = s.cpus().len() as u32;
            t.memory_used = s.used_memory();
            t.memory_total = s.total_memory();
        }
        t
    }

    /// Free and total bytes of the filesystem holding the data dir: asked
    /// of that filesystem itself where the OS can (any kind: a tmpfs, NFS, a
    /// container's overlay, which the disk list leaves out), else the disk
    /// whose mount point is the longest prefix of the data dir.
    fn disk(&mut self) -> (u64, u64) {
        if let Some(space) = fs_space(&self.data_dir) {
            return space;
        }
        let Some(disks) = self.disks.as_mut() else {
            return (0, 0);
        };
        disks.refresh(true);
        disks
            .iter()
            .filter(|d| self.data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| (d.available_space(), d.total_space()))
            .unwrap_or((0, 0))
    }
}

/// Free (for unprivileged users) and total bytes of the filesystem that
/// holds `path`. (The field types differ between platforms, hence the
/// conversions that are identities on Linux.)
#[cfg(unix)]
#[allow(clippy::useless_conversion)]
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `st` is a plain C struct that statvfs fills in; it is read only when
    // the call succeeded.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    let unit = u64::from(st.f_frsize);
    Some((
        u64::from(st.f_bavail).saturating_mul(unit),
        u64::from(st.f_blocks).saturating_mul(unit),
    ))
}

#[cfg(not(unix))]
fn fs_space(_: &Path) -> Option<(u64, u64)> {
    None
}

fn sample_gpus(gpus: &mut Gpus) -> Vec<GpuSample> {
    gpus.refresh(true);
    gpus.iter()
        .map(|g| GpuSample {
            name: g.model().or(g.vendor()).unwrap_or("GPU").to_string(),
            memory_total: g.total_memory().unwrap_or(0),
            memory_used: g.used_memory().unwrap_or(0),
            usage: g.usage(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sampler::new(dir.path());
        let t = s.sample();
        assert!(t.memory_total > 0, "memory total is read");
        assert!(t.cores > 0, "cores are counted");
        assert!(
            t.disk_total > 0 && t.disk_free <= t.disk_total,
            "the data dir's disk is found"
        );
        assert!((0.0..=100.0).contains(&t.cpu));
    }
}
