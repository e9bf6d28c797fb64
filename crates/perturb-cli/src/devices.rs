//! `perturb devices`: every backend, available or the reason it is not.

use crate::{Result, print_json};
use clap::Args;
use perturb_core::Backend;
use serde_json::{Value, json};

#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DevicesArgs) -> Result<()> {
    let entries = vec![cpu(), wgpu(), cuda()];
    if args.json {
        return print_json(&json!({ "backends": entries }));
    }
    for e in &entries {
        let name = e["backend"].as_str().unwrap_or("?");
        if e["available"].as_bool() == Some(true) {
            println!("{name}: available");
        } else {
            println!("{name}: unavailable: {}", e["reason"].as_str().unwrap_or("unknown"));
        }
        for d in e["devices"].as_array().into_iter().flatten() {
            println!("  - {}", d["summary"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

fn cpu() -> Value {
    let b = perturb_cpu::CpuBackend::new();
    json!({ "backend": "cpu", "available": true, "devices": [{ "summary": b.device_name(), "name": b.device_name() }] })
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Value {
    let adapters = perturb_wgpu::list_adapters();
    if adapters.is_empty() {
        return json!({ "backend": "wgpu", "available": false, "devices": [],
            "reason": "no adapter found: install a Vulkan, Metal or DX12 driver (on Linux without a GPU, Mesa's lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)" });
    }
    let devices: Vec<Value> = adapters
        .iter()
        .map(|a| {
            json!({
                "summary": format!(
                    "{} ({}, {}; driver {}; max storage binding {} MiB, workgroup <= {} invocations, {} KiB shared; features {})",
                    a.name, a.backend, a.device_type, a.driver, a.max_storage_buffer_binding_size >> 20,
                    a.max_compute_invocations_per_workgroup, a.max_compute_workgroup_storage_size >> 10, a.feature_list()
                ),
                "name": a.name, "api": a.backend, "type": a.device_type, "driver": a.driver,
                "max_storage_buffer_binding_size": a.max_storage_buffer_binding_size,
                "max_buffer_size": a.max_buffer_size,
                "max_compute_workgroup_size_x": a.max_compute_workgroup_size_x,
                "max_compute_invocations_per_workgroup": a.max_compute_invocations_per_workgroup,
                "max_compute_workgroup_storage_size": a.max_compute_workgroup_storage_size,
                "shader_f16": a.shader_f16, "timestamp_query": a.timestamp_query, "subgroup": a.subgroup,
            })
        })
        .collect();
    json!({ "backend": "wgpu", "available": true, "devices": devices })
}
#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Value {
    json!({ "backend": "wgpu", "available": false, "devices": [], "reason": "built without the `wgpu` feature" })
}

#[cfg(feature = "cuda")]
fn cuda() -> Value {
    match perturb_cuda::probe() {
        Ok(devs) if !devs.is_empty() => {
            let devices: Vec<Value> = devs
                .iter()
                .map(|d| {
                    json!({
                        "summary": format!("#{} {} (sm_{}, {} SMs, {:.1} GiB; driver CUDA {}.{})",
                            d.ordinal, d.name, d.sm(), d.multiprocessors, d.total_memory as f64 / (1u64 << 30) as f64,
                            d.driver_version.0, d.driver_version.1),
                        "ordinal": d.ordinal, "name": d.name,
                        "compute_capability": [d.compute_capability.0, d.compute_capability.1],
                        "total_memory": d.total_memory, "multiprocessors": d.multiprocessors,
                    })
                })
                .collect();
            json!({ "backend": "cuda", "available": true, "devices": devices })
        }
        Ok(_) => {
            json!({ "backend": "cuda", "available": false, "devices": [], "reason": "the driver reports no CUDA device" })
        }
        Err(e) => {
            // The line already names the backend: print the reason alone, not the error's prefix.
            let reason = match e {
                perturb_core::Error::Unavailable { reason, .. } => reason,
                other => other.to_string(),
            };
            json!({ "backend": "cuda", "available": false, "devices": [], "reason": reason })
        }
    }
}
#[cfg(not(feature = "cuda"))]
fn cuda() -> Value {
    json!({ "backend": "cuda", "available": false, "devices": [], "reason": "built without the `cuda` feature" })
}
