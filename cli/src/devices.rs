//! `softcot devices`: the adapters the wgpu backend can open (name, API, type, the limits that
//! decide how weights are bound, f16 support), and the CUDA devices (name, memory, compute
//! capability) or why there are none. With no wgpu adapter it says so and exits non-zero, so
//! scripts can use it as a check.

use clap::Args;
use serde_json::json;
use softcot_core::{Error, Result};

use crate::args::Format;

#[derive(Args)]
pub struct DevicesArgs {
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(a: DevicesArgs) -> Result<()> {
    let adapters = softcot_wgpu::adapters();
    let cuda = softcot_cuda::devices();
    match a.format {
        Format::Json => {
            let list: Vec<_> = adapters
                .iter()
                .map(|d| {
                    json!({
                        "name": d.name,
                        "backend": d.backend,
                        "device_type": d.device_type,
                        "driver": d.driver,
                        "max_storage_buffer_binding_size": d.max_storage_buffer_binding_size,
                        "max_buffer_size": d.max_buffer_size,
                        "shader_f16": d.shader_f16,
                    })
                })
                .collect();
            let cuda = match &cuda {
                Ok(devs) => json!(devs
                    .iter()
                    .map(|d| json!({
                        "ordinal": d.ordinal,
                        "name": d.name,
                        "total_mem": d.total_mem,
                        "compute_capability": format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
                    }))
                    .collect::<Vec<_>>()),
                Err(e) => json!({"error": e.msg}),
            };
            println!("{}", json!({"wgpu": list, "cuda": cuda}));
        }
        Format::Text => {
            for (i, d) in adapters.iter().enumerate() {
                println!(
                    "wgpu {i}: {} ({}, {}; {})\n    max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, shader-f16 {}",
                    d.name,
                    d.backend,
                    d.device_type,
                    d.driver,
                    d.max_storage_buffer_binding_size >> 20,
                    d.max_buffer_size >> 20,
                    if d.shader_f16 { "yes" } else { "no" }
                );
            }
            match &cuda {
                Ok(devs) if devs.is_empty() => println!("cuda: the driver found no device"),
                Ok(devs) => {
                    for d in devs {
                        println!(
                            "cuda {}: {} ({} MiB, compute capability {}.{})",
                            d.ordinal,
                            d.name,
                            d.total_mem >> 20,
                            d.compute_capability.0,
                            d.compute_capability.1
                        );
                    }
                }
                Err(e) => println!("cuda: {}", e.msg),
            }
        }
    }
    if adapters.is_empty() {
        return Err(Error::backend(
            "no wgpu adapter found: install a Vulkan, Metal or DX12 driver \
             (on Linux without a GPU, Mesa's lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)",
        ));
    }
    Ok(())
}
