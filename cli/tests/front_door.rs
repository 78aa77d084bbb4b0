//! The front door: `softcot --help`, `softcot bench --help`, README's Commands table and the docs
//! that list commands and workloads name the same things in the same order, and `--version` carries
//! what a bug report needs. A new command or workload fails here until every list names it.

mod common;

use std::path::Path;
use std::process::Command;

use common::softcot;

/// A file of the repository (cli/..), read whole.
fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of a markdown section, from its heading to the next `## ` heading.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().skip_while(|l| *l != heading).skip(1).collect();
    assert!(!lines.is_empty(), "no section {heading:?}");
    lines.into_iter().take_while(|l| !l.starts_with("## ")).collect()
}

/// The names that open the section's list items: `- `name`` ...
fn listed(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|rest| rest.split('`').next())
        .map(String::from)
        .collect()
}

/// The stdout of a successful softcot run.
fn stdout_of(args: &[&str]) -> String {
    let o = softcot(args);
    assert_eq!(o.code, 0, "softcot {args:?}: {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o.stdout
}

/// `softcot --help`'s commands and their summaries (wrapped lines joined), clap's own `help` left
/// out. clap indents a command by two spaces and the wrapped rest of a summary further.
fn help_commands() -> Vec<(String, String)> {
    let help = stdout_of(&["--help"]);
    let mut commands: Vec<(String, String)> = Vec::new();
    let block = help.lines().skip_while(|l| *l != "Commands:").skip(1);
    for line in block.take_while(|l| !l.trim().is_empty()) {
        let text = line.trim();
        match commands.last_mut() {
            Some((_, summary)) if line.starts_with("   ") => *summary = format!("{summary} {text}"),
            _ => {
                let (name, summary) = text.split_once(' ').unwrap_or((text, ""));
                commands.push((name.to_string(), summary.trim().to_string()));
            }
        }
    }
    commands.retain(|(name, _)| name != "help");
    assert!(!commands.is_empty(), "no commands in --help:\n{help}");
    commands
}

fn help_command_names() -> Vec<String> {
    help_commands().into_iter().map(|(name, _)| name).collect()
}

/// `softcot bench --help`'s possible `--workload` values, listed one a line as `- name[: help]`.
fn help_workloads() -> Vec<String> {
    let help = stdout_of(&["bench", "--help"]);
    let lines: Vec<&str> = help.lines().skip_while(|l| !l.contains("--workload <")).collect();
    let values = lines.iter().skip_while(|l| l.trim() != "Possible values:").skip(1);
    let workloads: Vec<String> = values
        .map(|l| l.trim())
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("- "))
        .map(|l| l.split(':').next().unwrap_or(l).trim().to_string())
        .collect();
    assert!(!workloads.is_empty(), "no --workload values in bench --help:\n{help}");
    workloads
}

/// README's Commands table: the command each row's first cell runs.
fn readme_commands() -> Vec<String> {
    let readme = repo_file("README.md");
    section(&readme, "## Commands")
        .iter()
        .filter_map(|l| l.strip_prefix("| `softcot "))
        .filter_map(|rest| rest.split([' ', '`']).next())
        .map(String::from)
        .collect()
}

#[test]
fn every_command_has_a_summary() {
    for (name, summary) in help_commands() {
        println!("{name:<12} {summary}");
        assert!(summary.len() > 10, "`{name}` has no one-line summary in --help");
    }
}

#[test]
fn help_names_the_method_and_where_to_start() {
    let help = stdout_of(&["--help"]);
    let about: Vec<&str> = help.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(about.len(), 2, "--help should open with two lines:\n{help}");
    // clap wraps to the terminal: compare words, not lines.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "continuous chains of thought",
        "Soft Tokens, Hard Truths",
        "softcot train",
        "README",
    ] {
        assert!(help.contains(needle), "--help does not say {needle:?}:\n{help}");
    }
}

#[test]
fn readme_table_lists_the_commands_of_help() {
    assert_eq!(
        readme_commands(),
        help_command_names(),
        "README's Commands table against --help"
    );
}

#[test]
fn architecture_lists_the_commands_of_help() {
    let doc = repo_file("docs/ARCHITECTURE.md");
    let listed = listed(&section(&doc, "## cli (softcot)"));
    assert_eq!(
        listed,
        help_command_names(),
        "docs/ARCHITECTURE.md's cli section against --help"
    );
}

#[test]
fn bench_summary_names_its_workloads() {
    let commands = help_commands();
    let (_, summary) = commands
        .iter()
        .find(|(name, _)| name == "bench")
        .expect("a bench command");
    let (_, list) = summary
        .split_once(": ")
        .expect("bench's summary lists its workloads after `: `");
    let named: Vec<&str> = list.trim_end_matches('.').split(", ").collect();
    assert_eq!(
        named,
        help_workloads(),
        "bench's summary in --help against its --workload values"
    );
}

#[test]
fn readme_lists_the_workloads_of_bench() {
    let readme = repo_file("README.md");
    let row = section(&readme, "## Commands")
        .into_iter()
        .find(|l| l.starts_with("| `softcot bench "))
        .expect("a bench row");
    let (_, rest) = row.split_once("--workload ").expect("the bench row names --workload");
    let named: Vec<&str> = rest.split('`').next().unwrap_or("").split("\\|").collect();
    assert_eq!(named, help_workloads(), "README's bench row against bench --help");
}

#[test]
fn benchmarks_doc_lists_the_workloads_of_bench() {
    let doc = repo_file("docs/BENCHMARKS.md");
    let listed = listed(&section(&doc, "## Workloads"));
    assert_eq!(
        listed,
        help_workloads(),
        "docs/BENCHMARKS.md's Workloads against bench --help"
    );
}

/// The commit of the checkout, or None where git or the repository is missing (as build.rs sees it).
fn checkout_commit() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_gives_commit_and_backends() {
    let long = stdout_of(&["--version"]);
    println!("{long}");
    let field = |key: &str| {
        long.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("--version has no {key:?} line:\n{long}"))
    };
    let first = format!("softcot {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(long.lines().next(), Some(first.as_str()));
    let commit = field("commit: ");
    let hash = commit.strip_suffix(", dirty").unwrap_or(commit);
    let hex = hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(hex || hash == "unknown", "not a commit: {commit:?}");
    // build.rs reruns whenever HEAD moves, so the binary names the checkout's commit.
    assert_eq!(hash, checkout_commit().as_deref().unwrap_or("unknown"));
    assert!(field("backends: ").starts_with("cpu, wgpu, cuda"), "{long}");
    assert!(!field("cuda: ").is_empty(), "{long}");

    let short = stdout_of(&["-V"]);
    assert_eq!(
        short.trim(),
        format!("{first} ({commit})"),
        "-V is the version and commit"
    );
}
