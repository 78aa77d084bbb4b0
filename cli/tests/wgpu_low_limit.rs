//! `softcot generate --backend wgpu` with the storage binding limit forced to 16 KiB
//! (`SOFTCOT_WGPU_MAX_BINDING`), on every fixture model: the same thinking ids as `--backend cpu`,
//! where embeddings, logits and (on wide-kv-bf16) cache slots are larger than one binding. With no
//! wgpu adapter the test prints a notice and passes, unless `SOFTCOT_REQUIRE_WGPU=1`.

use std::process::Command;

use serde_json::Value;
use softcot_tests::fixtures::{discover, name, Reference};

/// The thinking ids of `softcot generate` with `args` on `backend`, or the reason there are none.
fn think_ids(args: &[&str], backend: &str) -> Result<Vec<u64>, String> {
    let o = Command::new(env!("CARGO_BIN_EXE_softcot"))
        .args(args)
        .args(["--backend", backend, "--format", "json"])
        .env("SOFTCOT_WGPU_MAX_BINDING", "16384")
        .output()
        .map_err(|e| format!("cannot run softcot: {e}"))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(stderr.trim().lines().last().unwrap_or("failed").to_string());
    }
    let out: Value = serde_json::from_slice(&o.stdout).map_err(|e| format!("output is not JSON: {e}"))?;
    out["think_ids"]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect())
        .ok_or_else(|| "no think_ids in the output".to_string())
}

#[test]
fn generate_on_wgpu_with_a_low_binding_limit_matches_cpu() {
    let required = std::env::var("SOFTCOT_REQUIRE_WGPU").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in discover() {
        let r = Reference::open(&dir);
        let (_, prompt) = r.ids("generate.prompt_ids");
        let prompt: Vec<String> = prompt.iter().map(u32::to_string).collect();
        let prompt = prompt.join(",");
        // As many steps as the fixture's reference holds: past the soft path's length, soft
        // thinking amplifies rounding (see the fixtures README) and no two runs need agree.
        let greedy = r.ids("generate.greedy_ids").1.len().to_string();
        let soft = r.ids("generate.soft.shadow_ids").1.len().to_string();
        let tau = r.scalar("generate.soft.tau").to_string();
        for (think, n, extra) in [("hard", &greedy, vec![]), ("soft", &soft, vec!["--tau", tau.as_str()])] {
            let mut args = vec![
                "generate",
                "--model",
                dir.to_str().unwrap_or_default(),
                "--prompt-ids",
                &prompt,
                "--think",
                think,
                "--greedy",
                "--no-stop",
                "--think-tokens",
                n,
                "--answer-tokens",
                "0",
            ];
            args.extend(extra);
            let gpu = match think_ids(&args, "wgpu") {
                Err(e) if e.contains("no wgpu adapter") && !required => {
                    println!("skipped: {e} (set SOFTCOT_REQUIRE_WGPU=1 to make this a failure)");
                    return;
                }
                other => other,
            };
            let verdict = match (gpu, think_ids(&args, "cpu")) {
                (Ok(g), Ok(c)) if g == c => Ok(g.len()),
                (Ok(g), Ok(c)) => Err(format!("wgpu ids {g:?}, cpu ids {c:?}")),
                (g, c) => Err(format!("wgpu: {:?}, cpu: {:?}", g.err(), c.err())),
            };
            match verdict {
                Ok(len) => println!(
                    "{:<15} generate --think {think} --backend wgpu (16 KiB bindings): {len} ids equal to the CPU's",
                    name(&dir)
                ),
                Err(e) => failures.push(format!("{} --think {think}: {e}", name(&dir))),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
