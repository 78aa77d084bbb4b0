//! Disk full and read-only: a save that the system refuses stops `softcot sft --resume` with a
//! one-line error naming the path and the cause and a non-zero exit, leaves the previous
//! checkpoint unchanged and no temporary files behind, and the run, resumed once there is room,
//! ends as an uninterrupted one does (bit for bit).
//!
//! A file size limit (`ulimit -f`, with SIGXFSZ ignored, so writes past it fail with EFBIG) needs
//! no privileges and always runs. A full tmpfs (ENOSPC) and a read-only remount (EROFS) need a
//! private mount namespace (`unshare -m` as root, `unshare -rm` with user namespaces); where
//! neither is allowed they are skipped with a notice. A folder without write permission (EACCES)
//! runs where permissions apply (not as root).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    arithmetic_data, assert_clean_error, differing_files, folder_files, hidden_entries, output, smallest_fixture,
    softcot, Out,
};
use softcot_core::io::checkpoint::{list_checkpoints, load_checkpoint};
use softcot_core::optim::AdamwConfig;
use softcot_cpu::CpuBackend;

const FIRST: &str = "checkpoint-00000001";

/// A run stopped after its first checkpoint (`base`), and the same run uninterrupted (`reference`).
struct Runs {
    tmp: tempfile::TempDir,
    base: PathBuf,
    reference: PathBuf,
}

fn runs() -> Runs {
    let tmp = tempfile::tempdir().unwrap();
    let model = smallest_fixture();
    let data = tmp.path().join("d.jsonl");
    arithmetic_data(&data, 24);
    let sft = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "sft",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend(["--out", out.to_str().unwrap(), "--steps", "3", "--save-every", "1"]);
        args.extend(["--batch-size", "4", "--seq-len", "64", "--lr", "1e-3", "--warmup", "1"]);
        args.extend(extra);
        let o = softcot(&args);
        assert_eq!(o.code, 0, "{}", o.stderr);
    };
    let (base, reference) = (tmp.path().join("base"), tmp.path().join("reference"));
    sft(&reference, &[]);
    sft(&base, &["--stop-after", "1"]);
    Runs { tmp, base, reference }
}

impl Runs {
    /// A copy of the stopped run, to be resumed against an obstacle.
    fn copy(&self, name: &str) -> PathBuf {
        let dst = self.tmp.path().join(name);
        let o = output(Command::new("cp").arg("-a").arg(&self.base).arg(&dst));
        assert_eq!(o.code, 0, "cp: {}", o.stderr);
        dst
    }

    /// After the refused save `o` (of the run at `shown`, copied back to `run`): a clean error
    /// naming `shown` and `cause`, the first checkpoint unchanged and still the newest, no
    /// leftovers; then, resumed without the obstacle, the run ends as the uninterrupted one.
    fn check(&self, what: &str, o: &Out, shown: &Path, run: &Path, cause: &str) {
        assert_clean_error(o, cause);
        let line = o.stderr.trim().lines().last().unwrap();
        assert!(
            line.contains(&*shown.to_string_lossy()),
            "{what}: the error names no path of the run: {line}"
        );
        let diff = differing_files(&run.join(FIRST), &self.base.join(FIRST));
        assert!(diff.is_empty(), "{what}: the previous checkpoint changed: {diff:?}");
        assert_eq!(list_checkpoints(run).last().map(|c| c.0), Some(1), "{what}");
        load_checkpoint(&CpuBackend::new(), &run.join(FIRST), AdamwConfig::default())
            .unwrap_or_else(|e| panic!("{what}: the previous checkpoint does not load: {e}"));
        let left = hidden_entries(run);
        assert!(left.is_empty(), "{what}: leftovers: {left:?}");
        let files = folder_files(&run.join(FIRST)).len();
        let again = softcot(&["sft", "--resume", run.to_str().unwrap()]);
        assert_eq!(again.code, 0, "{what}: resume after the failure: {}", again.stderr);
        let diff = differing_files(&run.join("final"), &self.reference.join("final"));
        assert!(
            diff.is_empty(),
            "{what}: final/ {diff:?} differ from the uninterrupted run's"
        );
        println!(
            "{what}: exit {}, previous checkpoint unchanged ({} files), no leftovers; resumed, final weights equal the uninterrupted run's",
            o.code, files
        );
    }

    /// Resumes a copy of the run on a tmpfs in a private mount namespace, the tmpfs either filled
    /// to `room` free bytes or remounted read-only (`room` = "ro"); the run comes back to
    /// `name`. Returns the output, the path the program saw, and the copy.
    fn on_tmpfs(&self, ns: &[&str], name: &str, room: &str) -> (Out, PathBuf, PathBuf) {
        const SCRIPT: &str = r#"set -e
mnt=$1 src=$2 back=$3 room=$4; shift 4
mount -t tmpfs -o size=256m softcot-test "$mnt"
cp -a "$src" "$mnt/run"
if [ "$room" = ro ]; then
    mount -o remount,ro "$mnt"
else
    avail=$(df --output=avail -B1 "$mnt" | tail -n 1)
    fallocate -l $((avail - room)) "$mnt/filler"
fi
set +e
"$@" --resume "$mnt/run"
rc=$?
cp -a "$mnt/run" "$back" || exit 99
exit $rc"#;
        let mnt = self.tmp.path().join(format!("{name}-mnt"));
        std::fs::create_dir(&mnt).unwrap();
        let back = self.tmp.path().join(name);
        let o = output(
            Command::new(ns[0])
                .args(&ns[1..])
                .args(["sh", "-c", SCRIPT, "sh"])
                .args([&mnt, &self.base, &back])
                .arg(room)
                .args([env!("CARGO_BIN_EXE_softcot"), "sft"]),
        );
        assert!(back.is_dir(), "{name}: the mount namespace script failed: {}", o.stderr);
        (o, mnt.join("run"), back)
    }
}

/// The prefix that runs a command in a private mount namespace where it may mount a tmpfs, or
/// why there is none.
fn mount_namespace(dir: &Path) -> Result<Vec<&'static str>, String> {
    let probe = dir.join("probe");
    std::fs::create_dir(&probe).unwrap();
    let mut why = Vec::new();
    for ns in [vec!["unshare", "-m"], vec!["unshare", "-rm"]] {
        let mut cmd = Command::new(ns[0]);
        cmd.args(&ns[1..])
            .args(["sh", "-c", "mount -t tmpfs -o size=1m softcot-probe \"$1\"", "sh"])
            .arg(&probe);
        match cmd.output() {
            Ok(o) if o.status.success() => return Ok(ns),
            Ok(o) => why.push(format!(
                "{}: {}",
                ns.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => why.push(format!("{}: {e}", ns.join(" "))),
        }
    }
    Err(why.join("; "))
}

/// The largest file of a folder, in bytes.
fn largest_file(dir: &Path) -> u64 {
    folder_files(dir).values().map(|b| b.len() as u64).max().unwrap()
}

#[test]
fn a_file_size_limit_stops_the_save_cleanly() {
    let r = runs();
    let run = r.copy("fsize");
    // A quarter of the largest checkpoint file, in the 512-byte blocks of sh's `ulimit -f`: the
    // next checkpoint cannot be written, the metrics and the small files can.
    let blocks = largest_file(&run.join(FIRST)) / 4 / 512;
    let o = output(
        Command::new("sh")
            .args(["-c", "trap '' XFSZ; ulimit -f \"$1\"; shift; exec \"$@\"", "sh"])
            .arg(blocks.to_string())
            .args([env!("CARGO_BIN_EXE_softcot"), "sft", "--resume", run.to_str().unwrap()]),
    );
    r.check(
        &format!("file size limit {blocks} blocks (EFBIG)"),
        &o,
        &run,
        &run,
        "File too large",
    );
}

#[test]
fn a_full_file_system_stops_the_save_cleanly() {
    let r = runs();
    let ns = match mount_namespace(r.tmp.path()) {
        Ok(ns) => ns,
        Err(why) => {
            println!("SKIPPED: no private mount namespace for a small tmpfs here ({why}); the file size limit test covers a refused write");
            return;
        }
    };
    // Half a checkpoint free: the next checkpoint starts and cannot end.
    let room = folder_files(&r.base.join(FIRST))
        .values()
        .map(|b| b.len())
        .sum::<usize>()
        / 2;
    let (o, shown, run) = r.on_tmpfs(&ns, "full", &room.to_string());
    r.check(
        &format!("tmpfs with {room} bytes free via `{}` (ENOSPC)", ns.join(" ")),
        &o,
        &shown,
        &run,
        "No space left on device",
    );
}

#[test]
fn a_read_only_folder_stops_the_run_cleanly() {
    let r = runs();
    let mut ran = 0;
    // Permissions: a folder without write permission, where they apply (root ignores them).
    let run = r.copy("no-write");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ignored = std::fs::File::create(run.join("probe")).is_ok();
    if ignored {
        std::fs::remove_file(run.join("probe")).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        println!(
            "permissions are not enforced for this user (root): the chmod 0555 case is left to the read-only mount"
        );
    } else {
        let o = softcot(&["sft", "--resume", run.to_str().unwrap()]);
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        r.check("folder chmod 0555 (EACCES)", &o, &run, &run, "Permission denied");
        ran += 1;
    }
    // A read-only file system, which binds root too.
    match mount_namespace(r.tmp.path()) {
        Ok(ns) => {
            let (o, shown, run) = r.on_tmpfs(&ns, "ro", "ro");
            let what = format!("tmpfs remounted read-only via `{}` (EROFS)", ns.join(" "));
            r.check(&what, &o, &shown, &run, "Read-only file system");
            ran += 1;
        }
        Err(why) => println!("SKIPPED: read-only mount: no private mount namespace here ({why})"),
    }
    if ran == 0 {
        println!("SKIPPED: neither permissions nor a read-only mount can make a folder read-only here");
    }
}
