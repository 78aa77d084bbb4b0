#!/usr/bin/env python3
"""Reads softcot's TensorBoard event files back with TensorBoard's own reader and compares every
scalar with metrics.jsonl.

For each run folder under ROOT (a folder holding metrics.jsonl and tb/: an sft or train run, or
the warmstart/ and rl-MODE/ runs of the built-in task), every number (and boolean, as 0 or 1) of
every metrics line but "step" must be a TensorBoard scalar of the same tag at the same step, equal
to the value rounded to float32 (TensorBoard's simple_value), and TensorBoard must hold no point
that metrics.jsonl lacks.

    python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install tensorboard
    /tmp/tbvenv/bin/python tools/check_tensorboard.py OUT

Prints one line per run and exits non-zero on the first mismatch.
"""

import json
import math
import struct
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def f32(x):
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def expected(run):
    """{tag: {step: value}} from run/metrics.jsonl (a later line of a step wins, as in TB)."""
    want = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        v = json.loads(line)
        for k, x in v.items():
            if k == "step" or isinstance(x, (str, list, dict)) or x is None:
                continue
            want.setdefault(k, {})[v["step"]] = f32(x)
    return want


def check(run):
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    got = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        if len(set(steps)) != len(steps):
            sys.exit(f"{run}: {tag}: TensorBoard holds a step twice (a resume's points not dropped): {steps}")
        got[tag] = {e.step: e.value for e in events}
    want = expected(run)
    if sorted(got) != sorted(want):
        sys.exit(f"{run}: tags differ: TensorBoard {sorted(got)}, metrics.jsonl {sorted(want)}")
    points = 0
    for tag, steps in want.items():
        if sorted(got[tag]) != sorted(steps):
            sys.exit(f"{run}: {tag}: steps differ: TensorBoard {sorted(got[tag])}, metrics.jsonl {sorted(steps)}")
        for step, x in steps.items():
            y = got[tag][step]
            same = (math.isnan(x) and math.isnan(y)) or x == y
            if not same:
                sys.exit(f"{run}: {tag} at step {step}: TensorBoard {y!r}, metrics.jsonl {x!r}")
            points += 1
    files = len(list((run / "tb").glob("events.out.tfevents.*")))
    print(f"{run}: {len(want)} tags, {points} points equal in {files} event file(s)")
    return points


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    runs = sorted(p.parent for p in root.rglob("metrics.jsonl") if (p.parent / "tb").is_dir())
    if not runs:
        sys.exit(f"{root}: no run folder with metrics.jsonl and tb/")
    total = sum(check(r) for r in runs)
    print(f"ok: {len(runs)} run(s), {total} scalars read back by TensorBoard equal metrics.jsonl")


if __name__ == "__main__":
    main()
