# Exploratory, run on the H100 (session 6): the Wan VAE decoder's full-resolution 3x3x3 convolutions ran at
# 8.8 ms each in the stream's profile (about 27 TFLOP/s). cuDNN's conv3d against the same convolution as three
# conv2d calls (one per temporal tap, summed), at the decoder's shapes for one latent frame per call.
import json, os, torch
import torch.nn.functional as F
OUT = os.environ.get("OUT", "/tmp/out")
dev, dt = "cuda", torch.bfloat16
torch.backends.cudnn.benchmark = False

def bench(fn, n=10):
    fn(); fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n):
        fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / n

def by_taps(x, w, channels_last):
    # x: (1, C, T+2, H+2, W+2) padded, w: (O, C, 3, 3, 3) -> (1, O, T, H, W)
    frames = x[0].transpose(0, 1)  # (T+2, C, H+2, W+2)
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)
    t = frames.shape[0] - 2
    out = F.conv2d(frames[0:t], w[:, :, 0])
    out = out + F.conv2d(frames[1:t + 1], w[:, :, 1])
    out = out + F.conv2d(frames[2:t + 2], w[:, :, 2])
    return out.transpose(0, 1).unsqueeze(0)

results = []
for cin, cout, t, h, w_ in [(384, 384, 1, 60, 104), (384, 384, 2, 120, 208), (192, 192, 4, 240, 416),
                            (96, 96, 4, 480, 832), (96, 96, 12, 480, 832)]:
    x = torch.randn(1, cin, t + 2, h + 2, w_ + 2, device=dev, dtype=dt)
    w = torch.randn(cout, cin, 3, 3, 3, device=dev, dtype=dt) / (cin * 27) ** 0.5
    flops = 2 * cout * cin * 27 * t * h * w_
    row = dict(cin=cin, cout=cout, t=t, h=h, w=w_)
    ref = F.conv3d(x.float(), w.float())
    row["conv3d_ms"] = bench(lambda: F.conv3d(x, w))
    xc, wc = x.contiguous(memory_format=torch.channels_last_3d), w.contiguous(memory_format=torch.channels_last_3d)
    row["conv3d_channels_last_ms"] = bench(lambda: F.conv3d(xc, wc))
    row["taps_conv2d_ms"] = bench(lambda: by_taps(x, w, False))
    row["taps_conv2d_channels_last_ms"] = bench(lambda: by_taps(x, w, True))
    row["conv3d_tflops"] = flops / row["conv3d_ms"] / 1e9
    row["taps_err"] = (by_taps(x, w, True).float() - ref).abs().max().item()
    row["conv3d_err"] = (F.conv3d(x, w).float() - ref).abs().max().item()
    print(row, flush=True); results.append(row)
torch.backends.cudnn.benchmark = True
for row in results:
    x = torch.randn(1, row["cin"], row["t"] + 2, row["h"] + 2, row["w"] + 2, device=dev, dtype=dt)
    w = torch.randn(row["cout"], row["cin"], 3, 3, 3, device=dev, dtype=dt)
    row["conv3d_benchmark_mode_ms"] = bench(lambda: F.conv3d(x, w))
    row["taps_conv2d_channels_last_benchmark_mode_ms"] = bench(lambda: by_taps(x, w, True))
    print(row, flush=True)
json.dump(results, open(os.path.join(OUT, "explore_conv.json"), "w"), indent=1)
