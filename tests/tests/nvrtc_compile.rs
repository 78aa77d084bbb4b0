//! Way 1 of verifying the CUDA backend without a GPU: NVRTC (it needs no GPU or driver) compiles
//! every kernel module to PTX for compute_90 and to sm_90 machine code with ptxas's verbose
//! report, which must show no register spill. Prints registers and shared memory per kernel.
//! Skips with a notice when NVRTC is absent, unless SOFTCOT_REQUIRE_NVRTC=1 (set in CI).

use softcot_cuda::nvrtc;

/// ptxas's report for one kernel.
#[derive(Debug, Default)]
struct Usage {
    registers: u32,
    shared: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack: u32,
}

/// The first number before `unit` in `line` (`"... 12 bytes spill stores ..."`).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let head = &line[..line.find(unit)?];
    head.split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Per kernel, from ptxas's `-v` lines: "Compiling entry function 'k' for 'sm_90'", then
/// "N bytes stack frame, S bytes spill stores, L bytes spill loads" and
/// "Used R registers, ... B bytes smem".
fn parse(log: &str) -> Vec<(String, Usage)> {
    let mut out: Vec<(String, Usage)> = Vec::new();
    for line in log.lines() {
        if let Some(at) = line.find("entry function '") {
            let name = line[at + 16..].split('\'').next().unwrap_or("?").to_string();
            out.push((name, Usage::default()));
        } else if let Some((_, u)) = out.last_mut() {
            if line.contains("spill stores") {
                u.stack = number_before(line, "bytes stack frame").unwrap_or(0);
                u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
            if line.contains("Used") && line.contains("registers") {
                u.registers = number_before(line, "registers").unwrap_or(0);
                u.shared = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[test]
fn every_kernel_compiles_for_sm_90_without_spills() {
    if !nvrtc::available() {
        let msg = "NVRTC (libnvrtc.so) not found: kernels not compiled (set LD_LIBRARY_PATH to a CUDA 13 \
                   lib folder, e.g. the nvidia-cuda-nvrtc wheel's nvidia/cu13/lib)";
        assert!(std::env::var("SOFTCOT_REQUIRE_NVRTC").as_deref() != Ok("1"), "{msg}");
        println!("skipped: {msg}");
        return;
    }
    let mut failures = Vec::new();
    for (module, kernels) in nvrtc::modules() {
        if let Err(e) = nvrtc::compile(module, "compute_90", &[]) {
            failures.push(e.msg);
            continue;
        }
        let sass = match nvrtc::compile(module, "sm_90", &["--ptxas-options=-v"]) {
            Ok(c) => c,
            Err(e) => {
                failures.push(e.msg);
                continue;
            }
        };
        let usage = parse(&sass.log);
        for k in kernels.iter() {
            let Some((_, u)) = usage.iter().find(|(name, _)| name == k) else {
                failures.push(format!("{module}.cu: no ptxas report for kernel {k}"));
                continue;
            };
            println!(
                "nvrtc sm_90 {module}.cu {k:<28} {:>3} registers, {:>6} bytes shared, {:>4} bytes stack, spills {}/{}",
                u.registers, u.shared, u.stack, u.spill_stores, u.spill_loads
            );
            if u.spill_stores > 0 || u.spill_loads > 0 {
                failures.push(format!(
                    "{module}.cu: kernel {k} spills registers ({} bytes stored, {} loaded)",
                    u.spill_stores, u.spill_loads
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
