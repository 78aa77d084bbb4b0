# Sourced by the in-loop probes (mixture_in_loop.sh, step_timers.sh, head_parts.sh,
# layer_parts.sh): each commit built in a worktree of its own with timers patched into one file,
# and the worktrees removed when the script exits.

# build_patched EDITS FILE COMMIT...: EDITS, a Python list of edits, each an (old, new) pair of
# strings or a list of such pairs, the forms of one edit in different versions of FILE: the first
# whose old is in FILE of each commit's tree is replaced once (one must be); sets $work, where
# $work/COMMIT/target/release/softcot is built.
build_patched() {
  local edits=$1 file=$2 c
  shift 2
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  work=$(mktemp -d)
  # The worktrees go when the script ends, built or not.
  trap 'for w in "$work"/*; do git -C "$here" worktree remove --force "$w"; done; rmdir "$work"' EXIT
  for c in "$@"; do
    git -C "$here" worktree add -q --detach "$work/$c" "$c"
    python3 - "$work/$c/$file" "$edits" <<'PY'
import ast, sys
path, edits = sys.argv[1], ast.literal_eval(sys.argv[2])
s = open(path).read()
for edit in edits:
    forms = edit if isinstance(edit, list) else [edit]
    old, new = next(((o, n) for o, n in forms if o in s), (None, None))
    assert old is not None, forms
    s = s.replace(old, new, 1)
open(path, "w").write(s)
PY
    (cd "$work/$c" && cargo build -q --release -p softcot)
  done
}
