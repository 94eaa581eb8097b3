import sys, time, torch
sys.path.insert(0, "benchmarks")
from common import make_pair, BENCH_SHAPE
from openglm.infer import Sampling, generate_ids
import torch._inductor.config as ic
threads = int(sys.argv[1]); mode = sys.argv[2]; dtype = getattr(torch, sys.argv[3]); small = len(sys.argv) > 4
torch.set_num_threads(threads)
shape = dict(BENCH_SHAPE, num_hidden_layers=2, vocab_size=4096) if small else None
ours, hf = make_pair(dtype, shape)
del hf
if mode == "pack":
    ours.pack_weights()
PROMPT = [list(range(100, 116))]
def run(n):
    return [t[0] for t in generate_ids(ours, PROMPT, n, Sampling(), stop_ids=())]
with torch.inference_mode():
    ref = run(32)
if mode.startswith("compile"):
    ic.freezing = True
    if mode == "compile-at":
        ic.max_autotune = True
        ic.max_autotune_gemm_backends = "CPP,ATEN"
    ours.forward = torch.compile(ours.forward, dynamic=None)
t0 = time.time()
with torch.inference_mode():
    got = run(32)
print("compile/warm s", time.time() - t0, "same", got == ref, flush=True)
with torch.inference_mode():
    ts = []
    for n in (1, 65, 1, 65):
        t0 = time.perf_counter(); run(n); ts.append(time.perf_counter() - t0)
print(mode, sys.argv[3], "tok/s", 64 / (min(ts[1], ts[3]) - min(ts[0], ts[2])))
