//! The kernels' host build under AddressSanitizer (reads and writes past a buffer or a block's
//! shared memory) and ThreadSanitizer (races between the threads of a block, such as a missing
//! `__syncthreads`, and between blocks).
//!
//! build.rs builds the kernels and `host/runtime.cpp` a second and a third time, instrumented,
//! into shared libraries; `SOFTCOT_HOST_SANITIZE=address|thread` makes the host path load one
//! instead of the plain build. Rust itself is not instrumented: the process preloads the
//! sanitizer's runtime (`LD_PRELOAD`), which then watches the kernels and the runtime, with the
//! runtime telling it about fiber switches, barriers and launches (see host/runtime.cpp).
//! [`run_tests`] runs tests of the current test binary that way, in a child process, and fails
//! on any report. The tests below run the block-size sweeps of `ops/` under both sanitizers, and
//! first check that each sanitizer reports every bug of `host/sanitizer_bugs.cu`.

use std::process::Command;

use crate::launch::SANITIZED;

/// The environment variable that names the sanitizer whose build the host path loads.
pub const SANITIZE_ENV: &str = "SOFTCOT_HOST_SANITIZE";
/// With `SOFTCOT_REQUIRE_SANITIZERS=1` (CI), a sanitizer that could not be built fails the tests
/// that need it instead of skipping them.
pub const REQUIRE_ENV: &str = "SOFTCOT_REQUIRE_SANITIZERS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanitizer {
    Address,
    Thread,
}

impl Sanitizer {
    pub const ALL: [Sanitizer; 2] = [Sanitizer::Address, Sanitizer::Thread];

    /// Its name in `-fsanitize=` and in `SOFTCOT_HOST_SANITIZE`.
    pub fn name(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::Thread => "thread",
        }
    }

    /// The child's options: stop at the first report with exit code 66. ASan: leaks are not
    /// looked for (each pool thread keeps its fibers for its life), and a refused allocation is
    /// a null as without ASan (tests ask for impossible buffers on purpose). TSan: only the
    /// instrumented library's accesses count, not those the uninstrumented Rust code makes
    /// through libc (a memcpy), whose synchronisation TSan cannot see.
    fn options(self) -> (&'static str, &'static str) {
        match self {
            Sanitizer::Address => (
                "ASAN_OPTIONS",
                "halt_on_error=1:exitcode=66:detect_leaks=0:allocator_may_return_null=1",
            ),
            Sanitizer::Thread => (
                "TSAN_OPTIONS",
                "halt_on_error=1:exitcode=66:ignore_noninstrumented_modules=1",
            ),
        }
    }

    /// The headline of each of its reports.
    fn marker(self) -> &'static str {
        match self {
            Sanitizer::Address => "ERROR: AddressSanitizer",
            Sanitizer::Thread => "WARNING: ThreadSanitizer",
        }
    }
}

/// What a child process under a sanitizer printed, and how it ended.
pub struct SanitizedRun {
    pub sanitizer: Sanitizer,
    /// How many tests it ran.
    pub tests: usize,
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// stdout then stderr.
    pub output: String,
}

impl SanitizedRun {
    /// The sanitizer's report headlines, e.g. "WARNING: ThreadSanitizer: data race (pid=...)".
    pub fn reports(&self) -> Vec<&str> {
        let marker = self.sanitizer.marker();
        self.output.lines().filter(|l| l.contains(marker)).collect()
    }

    /// The last `n` lines of the output, for a failure message.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics, with the output's end, unless every test passed without any report.
    pub fn assert_clean(&self) {
        let passed = format!("test result: ok. {} passed", self.tests);
        assert!(
            self.code == Some(0) && self.reports().is_empty() && self.output.contains(&passed),
            "under {} (exit {:?}):\n{}",
            self.sanitizer.name(),
            self.code,
            self.tail(80)
        );
    }
}

/// Runs `tests` (exact names, ignored ones included) of the current test binary in a child
/// process whose host path runs the kernels' `san` build. None, after printing why, when this
/// build has none; that panics instead under `SOFTCOT_REQUIRE_SANITIZERS=1`.
pub fn run_tests(san: Sanitizer, tests: &[&str]) -> Option<SanitizedRun> {
    let build = SANITIZED
        .iter()
        .find(|b| b.sanitizer == san.name())
        .map(|b| b.build)
        .unwrap_or(Err("not in build.rs's list"));
    // The paths are the build machine's: a test binary copied elsewhere finds neither.
    let present = |(lib, runtime): (&'static str, &'static str)| match [lib, runtime]
        .into_iter()
        .find(|p| !std::path::Path::new(p).exists())
    {
        Some(missing) => Err(format!("{missing} is missing")),
        None => Ok(runtime),
    };
    let runtime = match build.map_err(str::to_string).and_then(present) {
        Ok(runtime) => runtime,
        Err(why) => {
            let msg = format!("no {} sanitizer build of the host kernels: {why}", san.name());
            assert!(
                std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                "{REQUIRE_ENV}=1 but {msg}"
            );
            println!("notice: {msg}; skipped");
            return None;
        }
    };
    let exe = std::env::current_exe().expect("the test binary's path");
    let (options, value) = san.options();
    let out = Command::new(exe)
        .args(["--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .args(tests)
        .env(SANITIZE_ENV, san.name())
        .env("LD_PRELOAD", runtime)
        .env(options, value)
        // Two pool threads, also on a bigger machine: TSan sees races between blocks only when
        // they ran on different pool threads (those one thread runs in turn are ordered), and
        // each pool thread adds a block's worth of fibers to every vector clock.
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("start the test binary again");
    let output = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some(SanitizedRun {
        sanitizer: san,
        tests: tests.len(),
        code: out.status.code(),
        output,
    })
}

/// The block sizes of a sweep: all of `sizes`, but only the powers of two (llm.c's 32 to 1024)
/// in a child process under ThreadSanitizer, whose every barrier costs time in proportion to
/// the CUDA threads alive (a vector clock entry each): all 32 sizes of rmsnorm's sweep took
/// 140 s there.
#[cfg(test)]
pub(crate) fn sweep(sizes: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let tsan = std::env::var(SANITIZE_ENV).as_deref() == Ok(Sanitizer::Thread.name());
    sizes.into_iter().filter(|s| !tsan || s.is_power_of_two()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::CudaBuf;
    use crate::host::Host;
    use crate::launch::{Arg, LaunchCfg, Launcher};
    use crate::ops::attention::tests::{buf, random};

    /// The block-size sweeps of ops/, run under each sanitizer.
    const SWEEPS: [&str; 6] = [
        "ops::norm::tests::rmsnorm_at_every_block_size",
        "ops::heads::tests::row_kernels_at_every_block_size",
        "ops::heads::tests::backward_rows_at_every_block_size",
        "ops::heads::tests::scale_and_gather_rows",
        "ops::attention::tests::attention_forward_and_backward_at_every_block_size",
        "ops::soft_head::tests::fused_soft_head_at_every_block_size",
    ];

    /// Each known bug, the sanitizer that must report it and what it must call it.
    const BUGS: [(&str, Sanitizer, &str); 6] = [
        ("bug_read_past_end", Sanitizer::Address, "heap-buffer-overflow"),
        ("bug_shared_past_end", Sanitizer::Address, "global-buffer-overflow"),
        (
            "bug_dynamic_shared_past_end",
            Sanitizer::Address,
            "heap-buffer-overflow",
        ),
        ("bug_reduce_missing_sync", Sanitizer::Thread, "data race"),
        ("bug_tile_reuse_missing_sync", Sanitizer::Thread, "data race"),
        ("bug_blocks_race", Sanitizer::Thread, "data race"),
    ];

    #[test]
    fn sanitizers_report_every_known_bug() {
        for (kernel, san, kind) in BUGS {
            let Some(run) = run_tests(san, &[&format!("sanitize::tests::{kernel}")]) else {
                continue;
            };
            let reports = run.reports();
            println!("{kernel} under {}: exit {:?}, {reports:?}", san.name(), run.code);
            assert!(
                run.code == Some(66) && reports.iter().any(|r| r.contains(kind)) && run.output.contains(kernel),
                "{kernel}: no {kind} reported by {} in the kernel:\n{}",
                san.name(),
                run.tail(60)
            );
        }
    }

    #[test]
    fn block_size_sweeps_under_sanitizers() {
        for san in Sanitizer::ALL {
            let start = std::time::Instant::now();
            if let Some(run) = run_tests(san, &SWEEPS) {
                run.assert_clean();
                println!(
                    "{}: the {} sweeps passed with no report in {:.1} s",
                    san.name(),
                    SWEEPS.len(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Launches a known-bug kernel over `x` (its output as long as `x`).
    fn launch_bug(kernel: &str, cfg: LaunchCfg, x: &[f32], n: Option<u32>) {
        let l = Launcher::Host(Host);
        let (mut y, x): (CudaBuf, CudaBuf) = (buf(&vec![0.0; x.len()]), buf(x));
        let mut args = vec![Arg::W(&mut y), Arg::R(&x)];
        args.extend(n.map(Arg::U32));
        l.launch("sanitizer_bugs", kernel, cfg, &args).unwrap();
    }

    fn block(grid: u32, threads: u32, shared_bytes: u32) -> LaunchCfg {
        LaunchCfg {
            grid: [grid, 1, 1],
            block: [threads, 1, 1],
            shared_bytes,
        }
    }

    // The known bugs, one test each: only the sanitized builds have these kernels, so they run
    // only in sanitizers_report_every_known_bug's child processes.

    #[test]
    #[ignore = "run under a sanitizer by sanitizers_report_every_known_bug"]
    fn bug_read_past_end() {
        launch_bug(
            "bug_read_past_end",
            LaunchCfg::elements(1000),
            &random(1000, 1.0, 1),
            Some(1000),
        );
    }

    #[test]
    #[ignore = "run under a sanitizer by sanitizers_report_every_known_bug"]
    fn bug_shared_past_end() {
        launch_bug("bug_shared_past_end", block(1, 32, 0), &random(32, 1.0, 1), None);
    }

    #[test]
    #[ignore = "run under a sanitizer by sanitizers_report_every_known_bug"]
    fn bug_dynamic_shared_past_end() {
        launch_bug(
            "bug_dynamic_shared_past_end",
            block(1, 32, 32 * 4),
            &random(32, 1.0, 1),
            None,
        );
    }

    #[test]
    #[ignore = "run under a sanitizer by sanitizers_report_every_known_bug"]
    fn bug_reduce_missing_sync() {
        launch_bug(
            "bug_reduce_missing_sync",
            block(1, 256, 0),
            &random(4096, 1.0, 1),
            Some(4096),
        );
    }

    #[test]
    #[ignore = "run under a sanitizer by sanitizers_report_every_known_bug"]
    fn bug_tile_reuse_missing_sync() {
        launch_bug(
            "bug_tile_reuse_missing_sync",
            block(1, 32, 0),
            &random(32 * 4, 1.0, 1),
            Some(4),
        );
    }

    #[test]
    #[ignore = "run under a sanitizer by sanitizers_report_every_known_bug"]
    fn bug_blocks_race() {
        launch_bug("bug_blocks_race", block(256, 32, 0), &random(256, 1.0, 1), None);
    }
}
