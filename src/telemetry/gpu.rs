//! The GPUs a node has: what it advertises as tags, renders on, and shows.
//!
//! NVIDIA first, through NVML, loaded at run time with `dlopen` (the driver
//! installs `libnvidia-ml.so.1`; a node without it still starts, and the
//! binary links to nothing beyond glibc). NVML sees every GPU the driver
//! manages, headless data-centre cards included, which sysinfo's Linux code
//! (it starts from `/sys/class/drm`) can miss. Where NVML is absent,
//! sysinfo's GPU data (DRM on Linux, DXGI on Windows, IOKit on macOS) names
//! the rest. Each GPU's vendor decides the Cycles backends the node offers:
//! NVIDIA `cuda` and `optix`, AMD `hip`, Apple `metal`. Intel's integrated
//! GPUs get no backend tag (Cycles' oneAPI wants an Arc card): a node with
//! one is tagged `oneapi` by hand.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};

use serde::{Deserialize, Serialize};

use super::GpuSample;

/// Who made a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Amd,
    Intel,
    Apple,
    Other,
}

impl Vendor {
    fn from_name(name: &str) -> Vendor {
        let n = name.to_ascii_lowercase();
        if n.contains("nvidia") {
            Vendor::Nvidia
        } else if n.contains("amd") || n.contains("advanced micro") || n.contains("ati ") {
            Vendor::Amd
        } else if n.contains("intel") {
            Vendor::Intel
        } else if n.contains("apple") {
            Vendor::Apple
        } else {
            Vendor::Other
        }
    }
}

/// One GPU found at startup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// Its index among the GPUs of its vendor (Cycles numbers devices so).
    pub index: u32,
    pub name: String,
    pub vendor: Vendor,
    pub memory_total: u64,
}

impl GpuDevice {
    /// The Cycles backends this GPU can render with (`--device` names).
    pub fn backends(&self) -> &'static [&'static str] {
        match self.vendor {
            Vendor::Nvidia => &["cuda", "optix"],
            Vendor::Amd => &["hip"],
            Vendor::Apple => &["metal"],
            Vendor::Intel | Vendor::Other => &[],
        }
    }
}

/// The tags a node with these GPUs carries: `gpu` and each backend.
pub fn tags(gpus: &[GpuDevice]) -> Vec<String> {
    let mut tags: Vec<String> = gpus
        .iter()
        .flat_map(|g| g.backends().iter().map(|b| (*b).to_string()))
        .collect();
    if !tags.is_empty() {
        tags.push("gpu".into());
    }
    tags.sort();
    tags.dedup();
    tags
}

/// The GPUs of this machine that Cycles can render on, NVML's first.
pub fn detect() -> Vec<GpuDevice> {
    if let Some(nvml) = Nvml::load() {
        let found = nvml.devices();
        if !found.is_empty() {
            return found
                .into_iter()
                .enumerate()
                .map(|(i, s)| GpuDevice {
                    index: i as u32,
                    name: s.name,
                    vendor: Vendor::Nvidia,
                    memory_total: s.memory_total,
                })
                .collect();
        }
    }
    from_sysinfo()
}

fn from_sysinfo() -> Vec<GpuDevice> {
    let Ok(gpus) = sysinfo::Gpus::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut per_vendor: std::collections::HashMap<&'static str, u32> = Default::default();
    gpus.iter()
        .map(|g| {
            let vendor = Vendor::from_name(g.vendor().unwrap_or_default());
            let counter = per_vendor.entry(vendor_key(vendor)).or_default();
            let index = *counter;
            *counter += 1;
            GpuDevice {
                index,
                name: g.model().or(g.vendor()).unwrap_or("GPU").to_string(),
                vendor,
                memory_total: g.total_memory().unwrap_or(0),
            }
        })
        .collect()
}

fn vendor_key(v: Vendor) -> &'static str {
    match v {
        Vendor::Nvidia => "nvidia",
        Vendor::Amd => "amd",
        Vendor::Intel => "intel",
        Vendor::Apple => "apple",
        Vendor::Other => "other",
    }
}

const NVML_SUCCESS: c_int = 0;
/// NVML_DEVICE_NAME_V2_BUFFER_SIZE.
const NAME_LEN: usize = 96;

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

#[repr(C)]
#[derive(Default)]
struct NvmlUtilization {
    gpu: c_uint,
    memory: c_uint,
}

type Handle = *mut c_void;

/// NVML, loaded and initialised; shut down and unloaded on drop.
pub(crate) struct Nvml {
    lib: *mut c_void,
    shutdown: unsafe extern "C" fn() -> c_int,
    count: unsafe extern "C" fn(*mut c_uint) -> c_int,
    handle: unsafe extern "C" fn(c_uint, *mut Handle) -> c_int,
    name: unsafe extern "C" fn(Handle, *mut c_char, c_uint) -> c_int,
    memory: unsafe extern "C" fn(Handle, *mut NvmlMemory) -> c_int,
    utilization: unsafe extern "C" fn(Handle, *mut NvmlUtilization) -> c_int,
}

/// Looks up `name` in `lib` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the symbol's real C signature.
unsafe fn symbol<F: Copy>(lib: *mut c_void, name: &CStr) -> Option<F> {
    // SAFETY: dlsym on a live handle; the caller vouches for the type.
    unsafe {
        let p = libc::dlsym(lib, name.as_ptr());
        (!p.is_null()).then(|| std::mem::transmute_copy::<*mut c_void, F>(&p))
    }
}

impl Nvml {
    /// NVML, when the NVIDIA driver is installed and answers.
    pub(crate) fn load() -> Option<Nvml> {
        // SAFETY: dlopen of a system library by name; every symbol is looked
        // up with its documented signature (nvml.h) and checked for null.
        unsafe {
            let lib = libc::dlopen(c"libnvidia-ml.so.1".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let Some(nvml) = Self::bind(lib) else {
                libc::dlclose(lib);
                return None;
            };
            let Some(init) = symbol::<unsafe extern "C" fn() -> c_int>(lib, c"nvmlInit_v2") else {
                libc::dlclose(lib);
                return None;
            };
            if init() != NVML_SUCCESS {
                libc::dlclose(lib);
                return None;
            }
            Some(nvml)
        }
    }

    /// # Safety
    /// `lib` is a live handle to libnvidia-ml.
    unsafe fn bind(lib: *mut c_void) -> Option<Nvml> {
        // SAFETY: signatures as in nvml.h.
        unsafe {
            Some(Nvml {
                lib,
                shutdown: symbol(lib, c"nvmlShutdown")?,
                count: symbol(lib, c"nvmlDeviceGetCount_v2")?,
                handle: symbol(lib, c"nvmlDeviceGetHandleByIndex_v2")?,
                name: symbol(lib, c"nvmlDeviceGetName")?,
                memory: symbol(lib, c"nvmlDeviceGetMemoryInfo")?,
                utilization: symbol(lib, c"nvmlDeviceGetUtilizationRates")?,
            })
        }
    }

    /// Every device with its name, memory and load.
    pub(crate) fn devices(&self) -> Vec<GpuSample> {
        let mut n: c_uint = 0;
        // SAFETY: out-pointers to live locals; NVML is initialised.
        if unsafe { (self.count)(&mut n) } != NVML_SUCCESS {
            return Vec::new();
        }
        (0..n).filter_map(|i| self.device(i)).collect()
    }

    fn device(&self, index: c_uint) -> Option<GpuSample> {
        let mut h: Handle = std::ptr::null_mut();
        let mut name = [0 as c_char; NAME_LEN];
        let mut mem = NvmlMemory::default();
        let mut util = NvmlUtilization::default();
        // SAFETY: out-pointers to live locals of the sizes NVML documents;
        // the name buffer's length is passed and NVML NUL-terminates it.
        unsafe {
            if (self.handle)(index, &mut h) != NVML_SUCCESS {
                return None;
            }
            let named = (self.name)(h, name.as_mut_ptr(), NAME_LEN as c_uint) == NVML_SUCCESS;
            let has_mem = (self.memory)(h, &mut mem) == NVML_SUCCESS;
            let has_util = (self.utilization)(h, &mut util) == NVML_SUCCESS;
            Some(GpuSample {
                name: if named {
                    CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
                } else {
                    format!("NVIDIA GPU {index}")
                },
                memory_total: if has_mem { mem.total } else { 0 },
                memory_used: if has_mem { mem.used } else { 0 },
                usage: has_util.then_some(util.gpu as f32),
            })
        }
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: NVML was initialised by `load`; the handle is live.
        unsafe {
            (self.shutdown)();
            libc::dlclose(self.lib);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(vendor: Vendor) -> GpuDevice {
        GpuDevice {
            index: 0,
            name: "x".into(),
            vendor,
            memory_total: 0,
        }
    }

    #[test]
    fn vendors_give_their_cycles_backends_as_tags() {
        assert_eq!(
            tags(&[gpu(Vendor::Nvidia), gpu(Vendor::Nvidia)]),
            ["cuda", "gpu", "optix"]
        );
        assert_eq!(tags(&[gpu(Vendor::Amd)]), ["gpu", "hip"]);
        assert_eq!(tags(&[gpu(Vendor::Apple)]), ["gpu", "metal"]);
        assert!(
            tags(&[gpu(Vendor::Intel)]).is_empty(),
            "an iGPU is no render GPU"
        );
        assert!(tags(&[]).is_empty());
    }

    #[test]
    fn vendor_names_from_pci_ids_and_drivers() {
        assert_eq!(Vendor::from_name("NVIDIA Corporation"), Vendor::Nvidia);
        assert_eq!(
            Vendor::from_name("Advanced Micro Devices, Inc. [AMD/ATI]"),
            Vendor::Amd
        );
        assert_eq!(Vendor::from_name("Intel Corporation"), Vendor::Intel);
        assert_eq!(Vendor::from_name("Apple"), Vendor::Apple);
        assert_eq!(Vendor::from_name("Matrox"), Vendor::Other);
    }

    #[test]
    fn detection_never_fails_and_agrees_with_the_tags() {
        let found = detect();
        let t = tags(&found);
        assert_eq!(t.is_empty(), found.iter().all(|g| g.backends().is_empty()));
        eprintln!("GPUs here: {found:?}; tags {t:?}");
    }
}
