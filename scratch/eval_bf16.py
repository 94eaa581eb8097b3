import sys, torch
from openglm.agent import LocalBackend
from openglm.data.synth import generate_tasks
from openglm.eval.agent import evaluate, markdown
from openglm.io import load_model
from openglm.speedrun import EMBEDDED_DIR
from openglm.tokenizer import load_tokenizer
m = load_model(EMBEDDED_DIR).eval().pack_weights()
assert m.embed.weight.dtype == torch.bfloat16
flag = sys.argv[2] == "on"
print(markdown(evaluate(LocalBackend(m, load_tokenizer(EMBEDDED_DIR), offered_tools_only=flag),
      generate_tasks(100, seed=int(sys.argv[1]), split="heldout"), with_baseline=False, progress=False)))
