"""Decode tok/s variants: eager-pack, compile(B: own packed mkldnn), compile+freezing (C), +autotune (D)."""
import sys, time, torch
sys.path.insert(0, "benchmarks")
from common import make_pair, BENCH_SHAPE
from openglm.infer import Sampling, generate_ids
from openglm.model import glm as G
import torch._inductor.config as ic
threads = int(sys.argv[1]); mode = sys.argv[2]; dtype = getattr(torch, sys.argv[3]); small = len(sys.argv) > 4
torch.set_num_threads(threads)
shape = dict(BENCH_SHAPE, num_hidden_layers=2, vocab_size=4096) if small else None
ours, hf = make_pair(dtype, shape)
del hf

def fwd(self, x):
    if self.packed:
        return torch.ops.mkldnn._linear_pointwise(x, self._pack, self.bias, "none", [], "")
    return torch.nn.functional.linear(x, self.weight, self.bias)

if mode in ("pack", "B"):
    ours.pack_weights()
    for m in ours.modules():
        if isinstance(m, G.Linear):
            m._packed_weight()
if mode == "B":
    G.Linear.forward = fwd
PROMPT = [list(range(100, 116))]
def run(n):
    return [t[0] for t in generate_ids(ours, PROMPT, n, Sampling(), stop_ids=())]
with torch.inference_mode():
    ref = run(32)
if mode != "pack":
    if mode in ("C", "D"):
        ic.freezing = True
    if mode == "D":
        ic.max_autotune = True
        ic.max_autotune_gemm_backends = "CPP,ATEN"
    ours.forward = torch.compile(ours.forward, dynamic=True)
t0 = time.time()
with torch.inference_mode():
    got = run(32)
print("compile/warm s", round(time.time() - t0, 1), "same", got == ref, flush=True)
with torch.inference_mode():
    ts = []
    for n in (1, 65, 1, 65, 1, 65):
        t0 = time.perf_counter(); run(n); ts.append(time.perf_counter() - t0)
print(mode, sys.argv[3], "tok/s", round(64 / (min(ts[1::2]) - min(ts[0::2])), 1), flush=True)
