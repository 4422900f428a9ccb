//! GPU memory and utilisation as Prometheus gauges, read from NVML (the driver's library,
//! loaded at run time) every few seconds: `stylize_gpu_memory_used_bytes`,
//! `stylize_gpu_memory_total_bytes` and `stylize_gpu_utilization_ratio`, one series per GPU
//! this process sees (`gpu` = NVML index, `name`). Built with the `nvml` feature (part of
//! `cuda`). Where NVML cannot start (no driver: a CPU machine, CI) the gauges do not exist:
//! nothing is reported rather than zeros.

use std::time::Duration;

use nvml_wrapper::Nvml;

use super::metrics::{GPU_MEMORY_TOTAL, GPU_MEMORY_USED, GPU_UTILIZATION};

/// How often the gauges are read.
pub const EVERY: Duration = Duration::from_secs(5);

/// Why no GPU metrics are reported, if they are not.
#[derive(Debug)]
pub struct Absent(pub String);

/// Starts reading the gauges on a thread of their own; `Err` (with the reason, for the log)
/// where NVML does not start or sees no GPU.
pub fn start() -> Result<(), Absent> {
    let nvml = Nvml::init().map_err(|e| Absent(format!("NVML did not start: {e}")))?;
    let count = nvml
        .device_count()
        .map_err(|e| Absent(format!("NVML counts no devices: {e}")))?;
    if count == 0 {
        return Err(Absent("NVML sees no GPU".into()));
    }
    publish(&nvml, count);
    std::thread::Builder::new()
        .name("gpu-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                publish(&nvml, count);
            }
        })
        .map_err(|e| Absent(format!("gpu-metrics thread: {e}")))?;
    Ok(())
}

/// One reading of every GPU; a GPU that fails to answer keeps its last values.
fn publish(nvml: &Nvml, count: u32) {
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        let gpu = index.to_string();
        let name = device.name().unwrap_or_default();
        if let Ok(memory) = device.memory_info() {
            metrics::gauge!(GPU_MEMORY_USED, "gpu" => gpu.clone(), "name" => name.clone())
                .set(memory.used as f64);
            metrics::gauge!(GPU_MEMORY_TOTAL, "gpu" => gpu.clone(), "name" => name.clone())
                .set(memory.total as f64);
        }
        if let Ok(rates) = device.utilization_rates() {
            metrics::gauge!(GPU_UTILIZATION, "gpu" => gpu, "name" => name)
                .set(f64::from(rates.gpu) / 100.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the driver's library (this machine, CI) NVML does not start, so the gauges
    /// are never created: a CPU replica exports none rather than zeros.
    #[test]
    fn without_a_driver_nothing_is_reported() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: the reading is real there
        }
        let absent = start().unwrap_err();
        assert!(absent.0.contains("NVML"), "{absent:?}");
    }
}
