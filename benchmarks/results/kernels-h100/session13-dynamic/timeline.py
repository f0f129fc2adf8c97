"""Session 13: where a work item's time goes in the Gluon forward at 128-token blocks (Wan 480p, 10% and 100%
density, bench_kernels.py's random masks). A copy of the current kernel is instrumented by text replacement
(written into the package as _timeline_gluon_hopper*.py and removed afterwards): per program, consumer and work
unit it records the SM clock (%clock) when the unit's Q and claim are in (t0), after the loop over its tiles
(t1) and after its output store (t2), and the global timer (ns) at t0 and t2. Printed per density: the mean
cycles of the tile loop per tile, of the tail (last P V, normalisation, store) and of the wait for the next unit;
and the spread of the programs' starting and finishing times (global timer). The finishing times came out equal
for every program in all three runs of session 13, which cannot be true; that part was not investigated and
its figures are not used. Run from the repository root:

    python3 benchmarks/results/kernels-h100/session13-dynamic/timeline.py
"""

import importlib
import json
import math
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
from bench_kernels import random_block_mask  # noqa: E402

from swiftdit.kernels.block_index_table import block_mask_to_index_table  # noqa: E402

PACKAGE = "kernels/block_sparse_attention"
SLOTS, FIELDS = 64, 8  # work units recorded per consumer; int32 fields per unit
CLOCK = 'gl.inline_asm_elementwise("mov.u32 $0, %clock;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)'
GLOBAL = 'gl.inline_asm_elementwise("mov.u32 $0, %globaltimer_lo;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)'


def stamp(indent, field, timer):
    slot = f"Counter + 8 + ((gl.program_id(0) * 2 + CONSUMER) * {SLOTS} + done) * {FIELDS} + {field}"
    return f"{indent}gl.store({slot}, {timer}, mask=done < {SLOTS})\n"


def write_instrumented_copy():
    kernel = open(f"{PACKAGE}/gluon_hopper_kernel.py").read()
    start = kernel.index("def _consumer(")
    head, body = kernel[:start], kernel[start:]
    read = "unit, count = _read_claim(claim)\n"
    for indent in ("    ", "        "):  # before the loop over units, and at the end of each
        body = body.replace(indent + read, indent + read + stamp(indent, 0, CLOCK) + stamp(indent, 3, GLOBAL), 1)
    last = "            last = LANE * STAGES"
    body = body.replace(last, stamp("            ", 1, CLOCK) + last, 1)
    end = "        done += 1\n        mbarrier.wait(lane_q_ready"
    body = body.replace(end, stamp("        ", 2, CLOCK) + stamp("        ", 4, GLOBAL) + end, 1)
    assert body.count("gl.store(Counter") == 7, "the kernel text changed: update the instrumentation"
    open(f"{PACKAGE}/_timeline_gluon_hopper_kernel.py", "w").write(head + body)
    launcher = open(f"{PACKAGE}/gluon_hopper.py").read()
    launcher = launcher.replace("from . import gluon_hopper_kernel\n",
                                "from . import _timeline_gluon_hopper_kernel as gluon_hopper_kernel\n")
    launcher = launcher.replace("claimed = torch.zeros(1, dtype=torch.int32, device=q.device)",
                                "claimed = TIMELINE.zero_()")
    assert "TIMELINE" in launcher and "_timeline_" in launcher
    open(f"{PACKAGE}/_timeline_gluon_hopper.py", "w").write(launcher)


def main():
    write_instrumented_copy()
    try:
        module = importlib.import_module("swiftdit.kernels.block_sparse_attention._timeline_gluon_hopper")
        assert module.load_kernel() is not None  # imports the instrumented kernel while its file is there
    finally:
        for name in ("_timeline_gluon_hopper.py", "_timeline_gluon_hopper_kernel.py"):
            os.remove(f"{PACKAGE}/{name}")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    module.TIMELINE = torch.zeros(8 + sms * 2 * SLOTS * FIELDS, dtype=torch.int32, device="cuda")
    h, n, d, block = 12, 32760, 128, 128
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for density in (0.1, 0.2, 1.0):
        mask = random_block_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
        idx, cnt = (x.to(torch.int32).contiguous() for x in block_mask_to_index_table(mask))
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:3], dtype=torch.float32, device="cuda")
        for _ in range(3):  # compile, then warm
            module.launch_forward_hopper(q, k, v, out, lse, idx, cnt, block, 1 / math.sqrt(d))
        torch.cuda.synchronize()
        t = module.TIMELINE[8:].view(sms, 2, SLOTS, FIELDS).long().cpu() % 2**32
        tiles = int(cnt[0, 0, 0])
        loop, tail, wait, units = [], [], [], []
        ends, starts = [], []
        for p in range(sms):
            for c in range(2):
                recorded = int((t[p, c, :, 0] != 0).sum())
                units.append(recorded)
                rows = t[p, c, :recorded]
                whole = rows[:-1]  # a consumer's last unit may be a piece of a cut item
                loop += ((whole[:, 1] - whole[:, 0]) % 2**32).tolist()
                tail += ((whole[:, 2] - whole[:, 1]) % 2**32).tolist()
                wait += ((rows[1:, 0] - rows[:-1, 2]) % 2**32).tolist()
                starts.append(int(rows[0, 3]))
                ends.append(int(rows[-1, 4]))
        base = min(starts)
        ends_ns = sorted((e - base) % 2**32 for e in ends)
        row = dict(density=density, tiles_per_item=tiles, units_per_consumer=[min(units), max(units)],
                   loop_cycles_mean=sum(loop) / len(loop), loop_cycles_per_tile=sum(loop) / len(loop) / tiles,
                   tail_cycles_mean=sum(tail) / len(tail), wait_cycles_mean=sum(wait) / len(wait),
                   wait_cycles_max=max(wait), finish_ns_min=ends_ns[0], finish_ns_median=ends_ns[len(ends_ns) // 2],
                   finish_ns_max=ends_ns[-1], start_ns_spread=max((s - base) % 2**32 for s in starts))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
