"""Exploration: NVIDIA cuDNN frontend's CuTe DSL block-sparse attention (SM90) against cuDNN dense SDPA and
swiftdit's Triton kernel on the same random block masks (bench_kernels' masks). Prints and writes JSON."""
import json, math, os, sys, time, traceback
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from bench_kernels import random_block_mask, kept_pairs, bench_ms
from swiftdit.kernels.block_sparse_attention import block_mask_to_index_table, block_sparse_attention

t0 = time.time()
from cudnn.block_sparse_attention import block_sparse_attention_forward
print("import cudnn BSA", time.time() - t0, "s", flush=True)
out_dir = sys.argv[1]
rows = []
dev = "cuda"
for shape, h, n in (("wan480", 12, 32760), ("wan720", 12, 75600)):
    d = 128
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), True)
    dense_flops = 4.0 * h * n * n * d
    rows.append(dict(shape=shape, block=0, density=1.0, kernel="cudnn_dense", ms=dense_ms, ratio=1.0))
    print(shape, "dense", dense_ms, flush=True)
    for block in (64, 128):
        nb = math.ceil(n / block)
        pad = nb * block - n
        block_sizes = torch.full((nb,), block, dtype=torch.int32, device=dev)
        block_sizes[-1] = n - (nb - 1) * block
        qp = F.pad(q, (0, 0, 0, pad)) if pad else q
        for density in (0.05, 0.1, 0.2, 0.5, 1.0):
            mask = random_block_mask(h, nb, density, dev, seed=int(density * 1000))
            idx, cnt = block_mask_to_index_table(mask)
            idx32 = idx.to(torch.int32).contiguous()
            cnt32 = cnt.to(torch.int32).contiguous()
            flops = 4.0 * d * kept_pairs(mask, n, block, 0)
            ideal_ms = dense_ms * flops / dense_flops
            with torch.no_grad():
                ref = block_sparse_attention(q, k, v, idx, cnt, block)
                ours_ms = bench_ms(lambda: block_sparse_attention(q, k, v, idx, cnt, block), True)
            rows.append(dict(shape=shape, block=block, density=density, kernel="swiftdit_triton", ms=ours_ms,
                             ratio=ideal_ms / ours_ms))
            for splits in (1, "auto"):
                for empty in (True, False):
                    name = f"cudnn_bsa splits={splits} empty={empty}"
                    try:
                        def call():
                            return block_sparse_attention_forward(qp, k, v, idx32, block_sizes=block_sizes,
                                                                  q2k_block_nums=cnt32, sparse_block_size=block,
                                                                  allow_empty_block_nums=empty, kv_splits=splits)
                        t1 = time.time()
                        res = call()
                        torch.cuda.synchronize()
                        compile_s = time.time() - t1
                        o, lse = res["o_tensor"], res["lse_tensor"]
                        err = (o[:, :, :n].float() - ref[0].float()).abs().max().item()
                        lerr = (lse[:, :, :n].float() - ref[1].float()).abs().max().item() if lse is not None else -1
                        ms = bench_ms(call, True)
                        rows.append(dict(shape=shape, block=block, density=density, kernel=name, ms=ms,
                                         ratio=ideal_ms / ms, err=err, lse_err=lerr, first_call_s=compile_s,
                                         lse_shape=list(lse.shape) if lse is not None else None))
                    except Exception as exc:
                        traceback.print_exc()
                        rows.append(dict(shape=shape, block=block, density=density, kernel=name, error=repr(exc)[:500]))
            line = [r for r in rows if r["shape"] == shape and r["block"] == block and r["density"] == density]
            print(shape, block, density, "ideal", round(ideal_ms, 3), " | ".join(
                f"{r['kernel']}: {r.get('ms', float('nan')):.3f} ms ({r.get('ratio', 0):.2f}) err={r.get('err', '-')}"
                for r in line), flush=True)
            with open(os.path.join(out_dir, "cudnn_bsa.json"), "w") as f:
                json.dump(rows, f, indent=1)
