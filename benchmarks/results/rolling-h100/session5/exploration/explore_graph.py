# Exploratory, run once on the H100 from the repository root (BENCHMARKS.md, rolling generation): is a streaming-size Wan forward host-bound, and what does a CUDA graph buy?
import json, os, sys, time
import torch
from diffusers import WanTransformer3DModel
sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS  # noqa
from sdpa_backends import sdpa_context  # noqa
OUT = os.environ.get("OUT", "/tmp/out")
device = torch.device("cuda"); dtype = torch.bfloat16
torch.manual_seed(0)
tr = WanTransformer3DModel(**WAN_13B).to(device, dtype).eval()
emb = torch.randn(1, WAN_TEXT_TOKENS, 4096, device=device, dtype=dtype)
res = {}
for frames in (3, 6, 12):
    x = torch.randn(1, 16, frames, 60, 104, device=device, dtype=dtype)
    t = torch.full((1,), 500.0, device=device)
    with torch.no_grad(), sdpa_context(device, False):
        for _ in range(3):
            tr(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)
        torch.cuda.synchronize()
        launch, total = [], []
        for _ in range(5):
            s = time.perf_counter(); tr(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)
            launch.append(time.perf_counter() - s); torch.cuda.synchronize(); total.append(time.perf_counter() - s)
        # CUDA graph
        side = torch.cuda.Stream(); side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                tr(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = tr(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        g.replay(); torch.cuda.synchronize()
        graph = []
        for _ in range(5):
            s = time.perf_counter(); g.replay(); torch.cuda.synchronize(); graph.append(time.perf_counter() - s)
        ref = tr(hidden_states=x, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        err = float((out - ref).abs().max())
        del g, out
    res[f"{frames}_latent_frames"] = dict(tokens=frames * 1560, eager_host_launch_s=sorted(launch)[2],
                                          eager_s=sorted(total)[2], graph_s=sorted(graph)[2], graph_max_abs_err=err)
    print(json.dumps(res, indent=1), flush=True)
json.dump(res, open(os.path.join(OUT, "graph.json"), "w"), indent=1)
