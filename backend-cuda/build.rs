//! Finds the kernels: every `kernels/*.cu` file is a module and every `__global__` function in it
//! a kernel. Writes `$OUT_DIR/kernels.rs` (each module's source for NVRTC and its kernel names)
//! and, with the `host` feature, builds the same files as C++ through `kernels/host_shim.h`, with
//! one generated entry point per kernel (`softcot_host_<kernel>(void** args)`, CUDA's argument
//! convention) and a table of them by name. Generated, not written per kernel: adding a kernel to
//! a `.cu` file is all it takes, so the host table can never miss one or disagree with NVRTC's.
//!
//! With `host`, it also builds the kernels, `host/runtime.cpp` and the known-bug kernels of
//! `host/sanitizer_bugs.cu` into two shared libraries, one under AddressSanitizer and one under
//! ThreadSanitizer, which `src/host.rs` loads instead of the plain build when
//! `SOFTCOT_HOST_SANITIZE` asks (see `src/sanitize.rs`). A compiler without a sanitizer does not
//! fail the build: the library's entry records why it is missing, and the tests say so.

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

fn module(path: PathBuf) -> Module {
    let src = fs::read_to_string(&path).expect("kernel source is UTF-8");
    let name = path.file_stem().expect("file stem").to_string_lossy().into_owned();
    Module {
        name,
        kernels: kernel_names(&src),
        path,
    }
}

fn modules(dir: &Path) -> Vec<Module> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("backend-cuda/kernels is readable")
        .map(|e| e.expect("kernels entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    paths.sort();
    paths.into_iter().map(module).collect()
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
        let wrappers = build_host(&root, &out, &mods);
        sanitized_builds(&mut rs, &root, &out, &wrappers);
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
/// What the plain and the sanitized builds share: C++17 with the shim forced in.
fn host_build(root: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .flag("-include")
        .flag(root.join("kernels/host_shim.h").to_str().expect("UTF-8 path"))
        // Philox noise must round as the CPU does: no fused multiply-add.
        .flag("-ffp-contract=off")
        .flag_if_supported("-Wno-unused-function");
    b
}

#[cfg(feature = "host")]
/// `$OUT_DIR/host_<module>.cpp`: the module and one entry point per kernel.
fn wrapper(out: &Path, m: &Module) -> PathBuf {
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
    gen
}

#[cfg(feature = "host")]
/// The plain host build, linked into the crate; returns the modules' wrappers.
fn build_host(root: &Path, out: &Path, mods: &[Module]) -> Vec<PathBuf> {
    let mut b = host_build(root);
    b.opt_level(2).file(root.join("host/runtime.cpp"));
    let wrappers: Vec<PathBuf> = mods.iter().map(|m| wrapper(out, m)).collect();
    b.files(&wrappers);
    b.compile("softcot_cuda_host");
    wrappers
}

#[cfg(feature = "host")]
/// Builds the sanitized libraries (the shipped kernels' `wrappers` and the known-bug kernels)
/// and writes their table, `BUG_KERNELS` and `SANITIZED`, into `rs`.
fn sanitized_builds(rs: &mut String, root: &Path, out: &Path, wrappers: &[PathBuf]) {
    let bugs = module(root.join("host/sanitizer_bugs.cu"));
    let names: Vec<(&str, &str)> = bugs.kernels.iter().map(|k| (bugs.name.as_str(), k.as_str())).collect();
    writeln!(
        rs,
        "/// (module, kernel) of the known-bug kernels, which only the sanitized libraries have."
    )
    .unwrap();
    writeln!(rs, "pub(crate) const BUG_KERNELS: &[(&str, &str)] = &{names:?};").unwrap();
    let mut sources = wrappers.to_vec();
    sources.push(wrapper(out, &bugs));
    writeln!(rs, "/// Each sanitizer's build of the kernels.").unwrap();
    writeln!(rs, "pub(crate) const SANITIZED: &[SanitizedBuild] = &[").unwrap();
    for san in ["address", "thread"] {
        let build = match build_sanitized(root, out, san, &sources) {
            Ok((lib, runtime)) => format!("Ok(({lib:?}, {runtime:?}))"),
            // The first line says what failed; the compiler's own output went to cargo's log.
            Err(why) => format!("Err({:?})", why.lines().next().unwrap_or_default()),
        };
        writeln!(rs, "    SanitizedBuild {{ sanitizer: {san:?}, build: {build} }},").unwrap();
    }
    writeln!(rs, "];").unwrap();
}

#[cfg(feature = "host")]
/// `$OUT_DIR/libsoftcot_cuda_host_<san>.so`: `sources` (kernel wrappers) instrumented by
/// `-fsanitize=<san>` with the runtime, for `dlopen` in a process that preloads the sanitizer's
/// runtime library; returns (library, runtime library) or why it cannot be built.
fn build_sanitized(root: &Path, out: &Path, san: &str, sources: &[PathBuf]) -> Result<(PathBuf, PathBuf), String> {
    let dir = out.join(format!("sanitize-{san}"));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let define = format!("SOFTCOT_SANITIZE_{}", san.to_uppercase());
    let fsanitize = format!("-fsanitize={san}");
    let mut kernels = host_build(root);
    // -O1 and frame pointers: ASan's and TSan's advice for usable stacks at a bearable speed.
    kernels
        .opt_level(1)
        .debug(true)
        .define(&define, None)
        .flag(&fsanitize)
        .flag("-fno-omit-frame-pointer")
        .out_dir(dir.join("kernels"))
        .files(sources);
    let mut runtime = host_build(root);
    runtime
        .opt_level(1)
        .debug(true)
        .define(&define, None)
        .out_dir(dir.join("runtime"))
        .file(root.join("host/runtime.cpp"));
    // The runtime's bookkeeping goes unseen by TSan (see host/runtime.cpp); ASan checks it too.
    if san == "address" {
        runtime.flag(&fsanitize);
    }
    let mut objects = kernels.try_compile_intermediates().map_err(|e| e.to_string())?;
    objects.extend(runtime.try_compile_intermediates().map_err(|e| e.to_string())?);
    let compiler = kernels.try_get_compiler().map_err(|e| e.to_string())?;
    let lib = out.join(format!("libsoftcot_cuda_host_{san}.so"));
    let status = compiler
        .to_command()
        .arg("-shared")
        .arg(&fsanitize)
        .arg("-o")
        .arg(&lib)
        .args(&objects)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("linking {} failed ({status})", lib.display()));
    }
    let name = format!("lib{}.so", if san == "address" { "asan" } else { "tsan" });
    let found = compiler
        .to_command()
        .arg(format!("-print-file-name={name}"))
        .output()
        .map_err(|e| e.to_string())?;
    let runtime_lib = PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
    // The compiler echoes the bare name when it has no such library.
    if !runtime_lib.is_absolute() || !runtime_lib.exists() {
        return Err(format!("{} has no {name}", compiler.path().display()));
    }
    Ok((lib, runtime_lib))
}
