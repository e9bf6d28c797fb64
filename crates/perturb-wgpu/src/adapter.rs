//! Adapter discovery and selection.
//!
//! [`list_adapters`] enumerates every adapter wgpu can see (for `perturb devices`);
//! [`select_adapter`] picks one: `PERTURB_WGPU_ADAPTER=substring` matches the adapter name
//! (case-insensitive), otherwise the best device type wins (discrete > integrated > virtual >
//! other > cpu), ties broken by enumeration order.

use perturb_core::{Error, Result};
use std::fmt;

const BACKEND: &str = "wgpu";

/// The environment variable that picks an adapter by (case-insensitive) name substring.
pub const ADAPTER_ENV: &str = "PERTURB_WGPU_ADAPTER";

/// One adapter as `perturb devices` shows it: identity plus the limits and features the
/// kernels care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name ("NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// Graphics API: "vulkan", "metal", "dx12", "gl".
    pub backend: String,
    /// "discrete", "integrated", "virtual", "cpu" or "other".
    pub device_type: String,
    /// Driver name and version information, as reported.
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub shader_f16: bool,
    pub timestamp_query: bool,
    pub subgroup: bool,
}

impl AdapterSummary {
    pub(crate) fn from_adapter(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
            (false, false) => format!("{} {}", info.driver, info.driver_info),
            (false, true) => info.driver.clone(),
            (true, false) => info.driver_info.clone(),
            (true, true) => "unknown".to_string(),
        };
        AdapterSummary {
            name: info.name.clone(),
            backend: info.backend.to_str().to_string(),
            device_type: device_type_name(info.device_type).to_string(),
            driver,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroup: features.contains(wgpu::Features::SUBGROUP),
        }
    }

    /// The features of interest as a comma-separated list ("-" when none).
    pub fn feature_list(&self) -> String {
        let mut f = Vec::new();
        if self.shader_f16 {
            f.push("SHADER_F16");
        }
        if self.timestamp_query {
            f.push("TIMESTAMP_QUERY");
        }
        if self.subgroup {
            f.push("SUBGROUP");
        }
        if f.is_empty() { "-".to_string() } else { f.join(", ") }
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}; driver {}): max storage binding {} MiB, max buffer {} MiB, workgroup x <= {}, \
             invocations <= {}, workgroup storage {} KiB; features: {}",
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.max_storage_buffer_binding_size >> 20,
            self.max_buffer_size >> 20,
            self.max_compute_workgroup_size_x,
            self.max_compute_invocations_per_workgroup,
            self.max_compute_workgroup_storage_size / 1024,
            self.feature_list()
        )
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

/// Higher is preferred.
fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    }
}

/// A wgpu instance with every compiled backend (wgpu's own `WGPU_BACKEND` etc. variables
/// are honoured).
pub(crate) fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Enumerates adapters. A driver that panics while probing is reported as an error, never
/// propagated as a panic.
pub(crate) fn enumerate(instance: &wgpu::Instance) -> Result<Vec<wgpu::Adapter>> {
    let run = std::panic::AssertUnwindSafe(|| pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())));
    std::panic::catch_unwind(run).map_err(|p| Error::Unavailable {
        backend: BACKEND,
        reason: format!("adapter enumeration panicked: {}", panic_message(&p)),
    })
}

pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Every adapter wgpu can see on this machine, in enumeration order (empty when there is none
/// or the drivers fail to load).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    enumerate(&inst).unwrap_or_default().iter().map(AdapterSummary::from_adapter).collect()
}

/// Picks an adapter: by name when `name_filter` is given (case-insensitive substring; Err
/// listing the names when none matches), else the best device type.
pub(crate) fn select_adapter(adapters: Vec<wgpu::Adapter>, name_filter: Option<&str>) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(Error::Unavailable {
            backend: BACKEND,
            reason: "no adapter found (no Vulkan/Metal/DX12 driver; on Linux without a GPU install \
                     lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)"
                .to_string(),
        });
    }
    let pick = match name_filter {
        Some(f) => {
            let needle = f.to_lowercase();
            adapters.iter().position(|a| a.get_info().name.to_lowercase().contains(&needle)).ok_or_else(|| {
                let names: Vec<String> = adapters.iter().map(|a| format!("\"{}\"", a.get_info().name)).collect();
                Error::Unavailable {
                    backend: BACKEND,
                    reason: format!("{ADAPTER_ENV}={f:?} matches no adapter; adapters: {}", names.join(", ")),
                }
            })?
        }
        None => {
            // max_by_key returns the last maximum; iterate in reverse so the first one wins.
            let ranks: Vec<u8> = adapters.iter().map(|a| device_type_rank(a.get_info().device_type)).collect();
            (0..adapters.len()).rev().max_by_key(|&i| ranks[i]).unwrap_or(0)
        }
    };
    adapters.into_iter().nth(pick).ok_or_else(|| Error::Unavailable {
        backend: BACKEND,
        reason: "adapter list changed during selection".to_string(),
    })
}

/// The adapter filter from the environment (unset or empty means none).
pub(crate) fn env_filter() -> Option<String> {
    std::env::var(ADAPTER_ENV).ok().filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_prefer_discrete() {
        use wgpu::DeviceType::*;
        let mut v = [Cpu, VirtualGpu, DiscreteGpu, IntegratedGpu, Other];
        v.sort_by_key(|&t| std::cmp::Reverse(device_type_rank(t)));
        assert_eq!(v, [DiscreteGpu, IntegratedGpu, VirtualGpu, Other, Cpu]);
    }

    #[test]
    fn empty_list_is_unavailable_not_panic() {
        let e = select_adapter(Vec::new(), None).unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains("no adapter"), "{e}");
    }
}
