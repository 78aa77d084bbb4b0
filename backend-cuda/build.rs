//! Finds the kernels: every `kernels/*.cu` file is a module and every `__global__` function in it
//! a kernel. Writes `$OUT_DIR/kernels.rs` (each module's source for NVRTC and its kernel names)
//! and, with the `host` feature, builds the same files as C++ through `kernels/host_shim.h`, with
//! one generated entry point per kernel (`softcot_host_<kernel>(void** args)`, CUDA's argument
//! convention) and a table of them by name. Generated, not written per kernel: adding a kernel to
//! a `.cu` file is all it takes, so the host table can never miss one or disagree with NVRTC's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

struct Module {
    name: String,
    path: PathBuf,
    kernels: Vec<String>,
}

/// Names of the `__global__` functions of a source: the identifier before the first `(` after
/// each `__global__` (the README's signature rule keeps them this plain).
fn kernel_names(src: &str) -> Vec<String> {
    src.match_indices("__global__")
        .filter_map(|(at, _)| {
            let rest = &src[at..];
            let head = &rest[..rest.find('(')?];
            let name = head
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .rfind(|s| !s.is_empty())?;
            Some(name.to_string())
        })
        .collect()
}

fn modules(dir: &Path) -> Vec<Module> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("backend-cuda/kernels is readable")
        .map(|e| e.expect("kernels entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let src = fs::read_to_string(&path).expect("kernel source is UTF-8");
            let name = path.file_stem().expect("file stem").to_string_lossy().into_owned();
            Module {
                name,
                kernels: kernel_names(&src),
                path,
            }
        })
        .collect()
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let kdir = root.join("kernels");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=host");
    let mods = modules(&kdir);

    let mut rs = String::new();
    writeln!(rs, "/// `kernels/common.cuh`, spliced into each module for NVRTC.").unwrap();
    writeln!(
        rs,
        "pub(crate) const COMMON: &str = include_str!({:?});",
        kdir.join("common.cuh")
    )
    .unwrap();
    writeln!(rs, "/// Every kernel module (`kernels/<name>.cu`) with its kernels.").unwrap();
    writeln!(rs, "pub(crate) const MODULES: &[KernelModule] = &[").unwrap();
    for m in &mods {
        writeln!(
            rs,
            "    KernelModule {{ name: {:?}, source: include_str!({:?}), kernels: &{:?} }},",
            m.name, m.path, m.kernels
        )
        .unwrap();
    }
    writeln!(rs, "];").unwrap();
    #[cfg(feature = "host")]
    {
        writeln!(rs, "extern \"C\" {{").unwrap();
        for k in mods.iter().flat_map(|m| &m.kernels) {
            writeln!(rs, "    fn softcot_host_{k}(args: *mut *mut core::ffi::c_void);").unwrap();
        }
        writeln!(rs, "}}").unwrap();
        writeln!(rs, "/// (module, kernel, host entry point) of every kernel.").unwrap();
        writeln!(rs, "pub(crate) const HOST_KERNELS: &[(&str, &str, HostEntry)] = &[").unwrap();
        for m in &mods {
            for k in &m.kernels {
                writeln!(rs, "    ({:?}, {k:?}, softcot_host_{k}),", m.name).unwrap();
            }
        }
        writeln!(rs, "];").unwrap();
        build_host(&root, &out, &mods);
    }
    fs::write(out.join("kernels.rs"), rs).expect("write kernels.rs");
}

#[cfg(feature = "host")]
/// The C++ that unpacks CUDA-style arguments (`args[i]` points at argument i's value) into a
/// call of the kernel, whatever its parameter types.
const CALL: &str = r#"
#include <cstddef>
#include <type_traits>
#include <utility>
template <class... P, std::size_t... I>
static void softcot_call(void (*f)(P...), void** a, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<P>::type*>(a[I])...);
}
template <class... P>
static void softcot_call(void (*f)(P...), void** a) {
    softcot_call(f, a, std::index_sequence_for<P...>{});
}
"#;

#[cfg(feature = "host")]
fn build_host(root: &Path, out: &Path, mods: &[Module]) {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .flag("-include")
        .flag(root.join("kernels/host_shim.h").to_str().expect("UTF-8 path"))
        // Philox noise must round as the CPU does: no fused multiply-add.
        .flag("-ffp-contract=off")
        .flag_if_supported("-Wno-unused-function")
        .file(root.join("host/runtime.cpp"));
    for m in mods {
        let mut cpp = format!("#include {:?}\n{CALL}", m.path);
        for k in &m.kernels {
            writeln!(
                cpp,
                "extern \"C\" void softcot_host_{k}(void** a) {{ softcot_call({k}, a); }}"
            )
            .unwrap();
        }
        let gen = out.join(format!("host_{}.cpp", m.name));
        fs::write(&gen, cpp).expect("write host wrapper");
        b.file(gen);
    }
    b.compile("softcot_cuda_host");
}
