"""Token reorder gathers at Wan 720p: advanced indexing against index_select, both memory layouts (one-off)."""
import torch

n, h, d = 75600, 12, 128
order = torch.randperm(n, device="cuda")
bnhd = torch.randn(1, n, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # processor layout
bhnd = bnhd.contiguous()  # kernel output layout


def ms(fn, reps=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


for name, x in (("(B,N,H,D) viewed as (B,H,N,D)", bnhd), ("contiguous (B,H,N,D)", bhnd)):
    print(name)
    print(f"  x[:, :, order]                    {ms(lambda: x[:, :, order]):.3f} ms")
    print(f"  x.index_select(2, order)          {ms(lambda: x.index_select(2, order)):.3f} ms")
    if x.transpose(1, 2).is_contiguous():
        print(f"  x.transpose(1,2).index_select(1)  {ms(lambda: x.transpose(1, 2).index_select(1, order).transpose(1, 2)):.3f} ms")
    a = x[:, :, order]
    b = x.index_select(2, order)
    assert torch.equal(a, b)
