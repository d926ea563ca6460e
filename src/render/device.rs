//! Which device a Cycles render runs on, and how Blender is told.
//!
//! A job names a device (`cpu`, `cuda`, `optix`, `hip`, `metal`, `oneapi` or
//! `auto`); Blender has no command-line flag for it, so the engine passes a
//! short Python expression (`--python-expr`) that sets Cycles' compute device
//! type in the preferences, enables the matching devices (only the slot's
//! GPU when the node runs one task per GPU) and switches every scene to
//! `GPU`. The expression runs with `--python-exit-code`, so a job that asks
//! for CUDA on a machine without a CUDA device fails with a reason instead of
//! quietly rendering on the CPU; `auto` takes the best backend there is and
//! falls back to the CPU. Only the fixed text below and two validated values
//! (the backend name, a GPU index) go into the expression: nothing from the
//! job is pasted into Python.

use std::fmt;
use std::str::FromStr;

/// Where Cycles renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda,
    Optix,
    Hip,
    Metal,
    OneApi,
    /// The best GPU backend this machine has, else the CPU.
    Auto,
}

/// The names `--device` accepts, in the order `auto` tries the backends.
pub const DEVICE_NAMES: &[&str] = &["cpu", "cuda", "optix", "hip", "metal", "oneapi", "auto"];

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Optix => "optix",
            Device::Hip => "hip",
            Device::Metal => "metal",
            Device::OneApi => "oneapi",
            Device::Auto => "auto",
        }
    }

    /// The tag a node must carry to take a job on this device: a node tags
    /// itself with the backends its GPUs support (see `telemetry::gpu`).
    /// `cpu` and `auto` run anywhere.
    pub fn required_tag(self) -> Option<&'static str> {
        match self {
            Device::Cpu | Device::Auto => None,
            other => Some(other.as_str()),
        }
    }

    /// Cycles' `compute_device_type` names this device may use, best first.
    fn cycles_types(self) -> &'static [&'static str] {
        match self {
            Device::Cpu => &[],
            Device::Cuda => &["CUDA"],
            Device::Optix => &["OPTIX"],
            Device::Hip => &["HIP"],
            Device::Metal => &["METAL"],
            Device::OneApi => &["ONEAPI"],
            Device::Auto => &["OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"],
        }
    }

    /// The Python expression that puts Cycles on this device; `gpu` limits
    /// it to one GPU (by its index among the backend's devices).
    pub fn python_expr(self, gpu: Option<u32>) -> String {
        if self == Device::Cpu {
            return CPU_EXPR.to_string();
        }
        let types: Vec<String> = self
            .cycles_types()
            .iter()
            .map(|t| format!("'{t}'"))
            .collect();
        let gpu = gpu.map_or("None".to_string(), |g| g.to_string());
        let fallback = if self == Device::Auto {
            "True"
        } else {
            "False"
        };
        GPU_EXPR
            .replace("@TYPES@", &types.join(","))
            .replace("@GPU@", &gpu)
            .replace("@FALLBACK@", fallback)
    }
}

/// Every scene on the CPU.
const CPU_EXPR: &str = "import bpy\n\
for s in bpy.data.scenes:\n    s.cycles.device = 'CPU'\n\
print('renderswarm: Cycles renders on the CPU')\n";

/// Enable the first backend of `@TYPES@` that has devices; `@GPU@` picks one
/// device of it; `@FALLBACK@` says whether no device means the CPU or an error.
const GPU_EXPR: &str = r#"import bpy
prefs = bpy.context.preferences.addons['cycles'].preferences
chosen = None
for kind in (@TYPES@,):
    try:
        prefs.compute_device_type = kind
    except TypeError:
        continue
    prefs.get_devices()
    found = [d for d in prefs.devices if d.type == kind]
    if found:
        chosen = (kind, found)
        break
if chosen is None:
    if not @FALLBACK@:
        raise RuntimeError('renderswarm: no ' + '/'.join((@TYPES@,)) + ' device for Cycles on this machine')
    for s in bpy.data.scenes:
        s.cycles.device = 'CPU'
    print('renderswarm: no GPU for Cycles here; rendering on the CPU')
else:
    kind, found = chosen
    want = @GPU@
    if want is not None and want >= len(found):
        raise RuntimeError('renderswarm: GPU %d asked for, but %s has only %d devices' % (want, kind, len(found)))
    for d in prefs.devices:
        d.use = False
    for i, d in enumerate(found):
        d.use = want is None or i == want
    for s in bpy.data.scenes:
        s.cycles.device = 'GPU'
    print('renderswarm: Cycles renders on ' + kind + ': ' + ', '.join(d.name for d in found if d.use))
"#;

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device name that is not one of [`DEVICE_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{0}`: use one of cpu, cuda, optix, hip, metal, oneapi, auto")]
pub struct UnknownDevice(pub String);

impl FromStr for Device {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> Result<Device, UnknownDevice> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda,
            "optix" => Device::Optix,
            "hip" => Device::Hip,
            "metal" => Device::Metal,
            "oneapi" => Device::OneApi,
            "auto" => Device::Auto,
            _ => return Err(UnknownDevice(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for name in DEVICE_NAMES {
            let d: Device = name.parse().unwrap();
            assert_eq!(d.as_str(), *name);
        }
        assert_eq!("CUDA".parse::<Device>(), Ok(Device::Cuda));
        let err = "vulkan".parse::<Device>().unwrap_err();
        assert!(err.to_string().contains("`vulkan`"), "{err}");
    }

    #[test]
    fn gpu_backends_are_required_tags_and_cpu_auto_are_not() {
        assert_eq!(Device::Cuda.required_tag(), Some("cuda"));
        assert_eq!(Device::Optix.required_tag(), Some("optix"));
        assert_eq!(Device::Cpu.required_tag(), None);
        assert_eq!(Device::Auto.required_tag(), None);
    }

    #[test]
    fn the_expression_names_the_backend_and_the_slot_gpu() {
        let e = Device::Cuda.python_expr(Some(1));
        assert!(e.contains("for kind in ('CUDA',):"), "{e}");
        assert!(e.contains("want = 1\n"), "{e}");
        assert!(
            e.contains("if not False:"),
            "explicit device must not fall back"
        );
        let auto = Device::Auto.python_expr(None);
        assert!(auto.contains("('OPTIX','CUDA','HIP','METAL','ONEAPI',)"));
        assert!(auto.contains("want = None\n"));
        assert!(auto.contains("if not True:"), "auto falls back to the CPU");
        assert!(Device::Cpu.python_expr(None).contains("'CPU'"));
        assert!(
            !Device::Cpu
                .python_expr(None)
                .contains("compute_device_type")
        );
    }
}
