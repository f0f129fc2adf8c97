"""What NVIDIA's assembler says of a kernel compiled for the H100 (sm_90a), without a GPU: the compile checks of
the Gluon forward (block_sparse_attention/gluon_hopper.py) and the Triton variant sweep
(benchmarks/bench_kernel_variants.py) both run it on their PTX."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

# ptxas's warning that it serialized the kernel's wgmma instructions: it then waits for each product before the
# next instruction, so no softmax overlaps a matrix product.
WGMMA_SERIALIZED = "C7513"


class PtxasReport(NamedTuple):
    registers: int | None  # per thread, as ptxas allocated them
    spill_bytes: int | None  # bytes of spill stores
    wgmma_serialized: bool
    log: str


def ptxas_report(ptx: str) -> PtxasReport:
    """Assembles `ptx` for sm_90a with the ptxas that ships with the installed Triton (`ptxas -v`); raises
    subprocess.CalledProcessError with ptxas's output where it fails."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder, "kernel.ptx")
        source.write_text(ptx)
        run = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name=sm_90a", str(source), "-o",
                              str(Path(folder, "kernel.cubin"))], capture_output=True, text=True)
    log = run.stdout + run.stderr
    if run.returncode:
        raise subprocess.CalledProcessError(run.returncode, "ptxas", output=log)
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return PtxasReport(int(registers.group(1)) if registers else None, int(spills.group(1)) if spills else None,
                       WGMMA_SERIALIZED in log, log)
