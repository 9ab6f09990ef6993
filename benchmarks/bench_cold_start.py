"""Cold start of `gradflow run compare_cells`: before/after, and where the compile time goes per group.

Runs the CLI in fresh processes without the persistent compile cache (GRADFLOW_COMPILE_CACHE=0),
alternating a checkout of an earlier revision (--before, default: the last commit before the
compile-time work of issue 17) with this tree, so that load drifts hit both alike. Prints, medians
over --repeat pairs:
  * the CLI's wall time end to end (interpreter start, imports, run, figures) and the ratio;
  * per compiled group (in config order): JAX tracing, lowering to StableHLO, and XLA's compile
    (jax.monitoring events), and the sum over everything compiled.

    python benchmarks/bench_cold_start.py [--repeat 5] [--before REV] [--quick]

Measured (2-core CPU, jax 0.10.2, --repeat 3), at 930b66b: quiet, before 18.63 s -> after 11.45 s
wall (1.63x), XLA compile 12.32 -> 5.76 s, per group XLA 1.59-2.52 s -> 0.74-1.25 s; with another
job on the cores 21.62 -> 9.30 s (2.32x). With an LSTM/GRU's kernel blocks drawn in one vmapped
call (9fa2f4c, measured at 8cfff24; reverted in 9b09f3b: it hung claim C14) it was 17.30 -> 8.64 s
quiet (2.00x), per group XLA 0.49-0.74 s. What did it: the unrolled-Threefry keys of
gradflow.engine.rng (a draw compiles as one fused kernel instead of a while loop; bits
unchanged), the fits on the
host (numpy, float64) instead of inside every program, XLA:CPU optimization level 0 for groups
under sweep.CHEAP_FLOPS (1 GFLOP; same numbers to float32 rounding), flax.nnx imported only when
used, one matplotlib layout pass per figure. Tried and dropped: compiling the next group in a
background thread (no gain: XLA:CPU already uses both cores), one program per run instead of
lax.map over the runs (no gain).

At 8296325 (a fresh machine, slower: the same a45353e took 25.4 s there at session start, against
12.0 s for 9ecd95e, 2.11x): the next groups lowered while XLA compiles the current one on a
background thread (sweep.prepare, devices.compile_ahead): 31.90 -> 15.44 s (2.07x, --repeat 5;
per group XLA 3.16-3.79 -> 1.16-2.09 s); against 9ecd95e (--before 9ecd95e) 1.05x (--repeat 8)
to 1.19x (6 alternating runs). Tried and dropped there: 2 compile threads instead of 1 (no gain:
each XLA:CPU compile keeps ~1.5 cores busy), importing matplotlib on a thread during the compiles
(no gain), the blocks' normal draws of an LSTM/GRU vmapped with one QR per block (bit-identical,
no gain; a batched QR, jnp.linalg.qr of [blocks, n, n], hangs claim C14 as the vmapped orthogonal
init did).

At d777738 (another machine, an AMD EPYC, quiet, --repeat 5): before d777738, 14.56 -> 7.72 s
(1.89x; per group XLA 1.39-1.88 -> 0.53-0.95 s); with the command ending in
gradflow.cli.exit_quickly (exit handlers, open files flushed, then os._exit: the interpreter's
teardown of jax/XLA took 0.4-0.5 s), 14.62 -> 7.05 s (2.07x; XLA 9.48 -> 3.94 s in all).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "a45353e"  # stop 22: before the unrolled-Threefry keys, host fits and cheap-group compiles

CHILD = """
import json, sys, time
events = []
import jax
jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: events.append((name.rsplit("/", 1)[-1], kw.get("fun_name", ""), secs)))
from gradflow import cli
t0 = time.perf_counter()
try:
    code = cli.main(["run", sys.argv[1], "-o", sys.argv[2], *sys.argv[3:]])
except SystemExit as e:
    code = e.code
assert not code, code
print(json.dumps({"run": time.perf_counter() - t0, "events": events}))
getattr(cli, "exit_quickly", sys.exit)(code)  # as the gradflow command ends, where it has one
"""

STAGES = {"jaxpr_trace_duration": "trace", "jaxpr_to_mlir_module_duration": "lower",
          "backend_compile_duration": "xla"}  # fmt: skip


def one_run(tree: Path, out: str, quick: bool) -> dict:
    env = {**os.environ, "GRADFLOW_COMPILE_CACHE": "0", "PYTHONPATH": str(tree)}
    args = [str(tree / "configs" / "compare_cells.yaml"), out, *(["--quick"] if quick else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, check=True, cwd=tree
    )
    wall = time.perf_counter() - t0
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall": wall, **row}


def groups(events) -> list[dict]:
    """Per compiled group: the big programs (> 0.2 s of XLA), in order, with their trace/lower times."""
    out, pending = [], {}
    for name, fun, secs in events:
        stage = STAGES.get(name)
        if stage is None:
            continue
        pending[stage] = secs
        if stage == "xla":
            if secs > 0.2:
                out.append({"name": fun, **pending})
            pending = {}
    return out


def totals(events) -> dict:
    sums = {s: 0.0 for s in STAGES.values()}
    for name, _, secs in events:
        if name in STAGES:
            sums[STAGES[name]] += secs
    sums["programs"] = sum(1 for name, _, _ in events if name == "backend_compile_duration")
    return sums


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with")
    parser.add_argument("--quick", action="store_true", help="the config's --quick sizes")
    args = parser.parse_args()
    rows = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        add = ["git", "worktree", "add", "--detach", "-q", str(before), args.before]
        subprocess.run(add, cwd=ROOT, check=True)
        try:
            for i in range(args.repeat):
                for label, tree in (("before", before), ("after", ROOT)):
                    rows[label].append(one_run(tree, f"{tmp}/{label}{i}", args.quick))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=True)
    med = statistics.median
    name = "compare_cells" + (" --quick" if args.quick else "")
    print(f"gradflow run {name}, cold (no compile cache), median of {args.repeat} fresh processes each:")
    for label in rows:
        t = [totals(r["events"]) for r in rows[label]]
        wall, run = med(r["wall"] for r in rows[label]), med(r["run"] for r in rows[label])
        print(f"  {label:6s} ({args.before if label == 'before' else 'this tree'}): "
              f"wall {wall:5.2f} s, run {run:5.2f} s; "
              f"{med(x['programs'] for x in t):.0f} programs: trace {med(x['trace'] for x in t):.2f} s, "
              f"lower {med(x['lower'] for x in t):.2f} s, XLA {med(x['xla'] for x in t):.2f} s")  # fmt: skip
    ratio = med(r["wall"] for r in rows["before"]) / med(r["wall"] for r in rows["after"])
    print(f"  cold wall before / after: {ratio:.2f}x")
    print("  per group (trace / lower / XLA compile, s, medians):")
    per = {label: [groups(r["events"]) for r in rows[label]] for label in rows}
    n = min(len(g) for label in per for g in per[label])
    for k in range(n):
        cells = []
        for label in rows:
            trace, lower, xla = (med(g[k].get(s, 0.0) for g in per[label]) for s in ("trace", "lower", "xla"))
            cells.append(f"{label} {trace:.2f} / {lower:.2f} / {xla:.2f}")
        print(f"    {per['after'][0][k]['name']:28s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
