"""The RL stage on the shipped nano agent: rewards rise, loss lands on the policy's own tokens,
resume is exact, rewards and configs fail clearly."""

import json
import tempfile

import pytest
import torch

from openglm.agent import Limits
from openglm.agent.tools import PythonTool
from openglm.align.rewards import Sample, answer_matches, build_rewards, final_answer
from openglm.align.rl import RLConfig, _example, run_rl
from openglm.align.rollout import collect
from openglm.data.synth import generate_tasks
from openglm.embedded import EMBEDDED_DIR
from openglm.infer import Sampling
from openglm.io import load_model
from openglm.loading import load_for_inference
from openglm.model.glm import IGNORE

QUIET = {"tensorboard": False, "progress": False, "peak_flops": 1e11}
QUESTIONS = ["Tell me about the weather.", "What is your name?", "Say hello.", "Give me a tip for studying.",
             "你好", "介绍一下你自己", "What can you do?", "写一句话。"]


def toy_config(tmp_path, **overrides) -> RLConfig:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n"
                               for q in QUESTIONS))
    raw = {"model": str(EMBEDDED_DIR), "tokenizer": str(EMBEDDED_DIR), "train_data": [str(prompts)],
           "rewards": [{"type": "contains", "text": "?"}], "prompts_per_step": 4, "group_size": 6,
           "max_turn_tokens": 24, "temperature": 1.0, "lr": 3e-4, "beta": 0.01, "max_steps": 24,
           "micro_batch_size": 24, "seq_len": 128, "out_dir": str(tmp_path / "run"), "seed": 3,
           "save_every": 0, **QUIET, **overrides}
    return RLConfig.from_dict(raw)


def log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_toy_reward_rises_and_kl_is_logged(tmp_path):
    cfg = toy_config(tmp_path)
    run_rl(cfg)
    records = log(tmp_path / "run")
    first = sum(r["reward"] for r in records[:4]) / 4
    last = sum(r["reward"] for r in records[-4:]) / 4
    assert last > first + 0.3 and last > 0.7, (first, last)
    assert all(k in records[-1] for k in ("kl", "entropy", "clip_frac", "reply_tokens", "rollout_tokens_per_s"))
    assert records[-1]["kl"] > 0  # the policy moved away from the reference
    assert (tmp_path / "run" / "rl.png").stat().st_size > 0
    assert (tmp_path / "run" / "final" / "config.json").exists()


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_resume_is_exact(tmp_path, algorithm):
    """A run that lost its last checkpoint resumes from the one before and ends the same."""
    import shutil

    overrides = {"algorithm": algorithm, "max_steps": 4, "save_every": 2, "ppo_epochs": 2, "prompts_per_step": 2,
                 "group_size": 3, "micro_batch_size": 3, "lr": 1e-4}
    run = tmp_path / "run"
    run_rl(toy_config(tmp_path, **overrides))
    whole = load_model(run / "final").state_dict()
    rewards = [r["reward"] for r in log(run)]
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    shutil.rmtree(run / "final")
    run_rl(toy_config(tmp_path, **{**overrides, "resume": True}))
    resumed = load_model(run / "final").state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert [r["reward"] for r in log(run)] == rewards


def test_agent_rollouts_train_only_the_policys_own_tokens():
    model, tok = load_for_inference(None)
    tasks = [t for t in generate_tasks(40, seed=11, split="train") if t.calls][:3]
    records = [{"prompt": t.prompt, "answer": t.answer, "calls": t.calls} for t in tasks]
    with tempfile.TemporaryDirectory() as work, PythonTool(work) as python:
        rollouts = collect(model, tok, records, 2, Sampling(0.7, seed=1), mode="agent",
                           limits=Limits(max_steps=3, max_turn_tokens=64), python=python)
    assert [r.group for r in rollouts] == [0, 0, 1, 1, 2, 2]
    stops = set(tok.stop_ids)
    multi_turn = 0
    for r in rollouts:
        turns = [m for m in r.sample.reply if m["role"] == "assistant"]
        observations = [m for m in r.sample.reply if m["role"] == "observation"]
        multi_turn += bool(observations)
        # contiguous runs of generated tokens = the model's turns, each ended by its stop token
        runs, run = [], []
        for t, g in zip(r.ids, r.generated):
            if g:
                run.append(t)
            elif run:
                runs.append(run)
                run = []
        runs += [run] if run else []
        assert len(runs) == len(turns)
        for run, turn in zip(runs, turns):
            text = tok.decode([t for t in run if t not in stops])
            want = f"{turn['metadata']}\n{turn['content']}" if turn.get("metadata") else turn["content"]
            assert text.strip() == want.strip()
        context = tok.decode([t for t, g in zip(r.ids, r.generated) if not g], skip_special=False)
        for obs in observations:
            assert obs["content"].strip() in context  # observations are context, never targets
        ex = _example(r.ids, r.generated, 4096)
        targeted = [i + 1 for i in range(len(ex.ids)) if ex.targets[i] != IGNORE]
        assert targeted == [i for i, g in enumerate(r.generated) if g]
    assert multi_turn >= 2  # the check above covered real tool observations


def test_rule_rewards():
    assert final_answer("so the total is \\boxed{42}. Done") == "42"
    assert final_answer("first 3, then 1,250.5") == "1,250.5"
    assert answer_matches("The answer is 1,250.50", "1250.5")
    assert not answer_matches("The answer is 1250", "1250.5")
    assert answer_matches("half: 1/2", "0.5") and answer_matches("Paris", "paris")
    assert answer_matches("The CAGR is 12.52%.", "12.52") and answer_matches("12.5%", "0.125")
    assert answer_matches("50%", "50%") and not answer_matches("50%", "0.6")
    task = {"prompt": [], "answer": "5", "calls": [{"name": "python", "arguments": "print(2+3)"}]}
    right = Sample(task, [], final="It is 5.", calls=[{"name": "python", "arguments": "", "valid": True}])
    wrong_tool = Sample(task, [], final="It is 5.", calls=[{"name": "search", "arguments": {}, "valid": False}])
    rewards = build_rewards([{"type": "task", "tool_credit": 0.5}, {"type": "format", "weight": 0.25},
                             {"type": "length", "max_tokens": 10, "weight": 2}])
    right.reply_tokens = 15
    total, parts = rewards([right, wrong_tool])
    assert parts == {"task": [1.5, 1.0], "format": [0.0, -1.0], "length": [-0.5, 0.0]}
    assert total == pytest.approx([1.5 - 1.0, 1.0 - 0.25])
    chat = Sample({"prompt": [], "calls": []}, [], final="Hello!")
    assert build_rewards([{"type": "task"}])([chat])[0] == [1.0]


def test_a_python_function_reward(tmp_path):
    (tmp_path / "my_rewards.py").write_text("def score(sample):\n    return len(sample.final) / 10\n")
    cfg = toy_config(tmp_path, rewards=[{"type": "python", "function": "my_rewards.py:score"}])
    from openglm.align.rewards import resolve_reward_paths

    entry = resolve_reward_paths(cfg.rewards[0], tmp_path)
    total, _ = build_rewards([entry])([Sample({"prompt": []}, [], final="abcde")])
    assert total == [0.5]


@pytest.mark.parametrize("entries, message", [
    ([], "at least one"),
    ([{"type": "bleu"}], "unknown type 'bleu'"),
    ([{"type": "contains"}], "rewards[0] (contains): needs 'text'"),
    ([{"type": "python", "function": "nowhere.py:f"}], "no file nowhere.py"),
    ([{"type": "length", "max_tokens": 0}], "max_tokens >= 1"),
])
def test_bad_reward_entries_say_what_is_wrong(entries, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        build_rewards(entries)


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        toy_config(tmp_path, group_size=1)
    with pytest.raises(ValueError, match="algorithm='a2c'"):
        toy_config(tmp_path, algorithm="a2c")


def test_rollouts_sample_from_the_updated_weights():
    """A fused optimizer updates weights without bumping their version: the packed copies the
    CPU inference paths use must be rebuilt before each round of rollouts."""
    model = load_model(EMBEDDED_DIR, dtype=torch.float32).pack_weights()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    model(ids).sum().backward()
    opt.step()
    with torch.no_grad():
        model.pack_weights()
        after = model(ids)
        reference = load_model(EMBEDDED_DIR, dtype=torch.float32)
        reference.load_state_dict(model.state_dict())
        want = reference(ids)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, want, rtol=1e-4, atol=1e-4)


def test_a_reward_model_scores_rollouts(tmp_path):
    from openglm.train.reward_model import RewardModel, save_reward_model

    _, tok = load_for_inference(None)
    torch.manual_seed(0)
    rm = RewardModel(load_model(EMBEDDED_DIR, dtype=torch.float32))
    with torch.no_grad():
        rm.score.weight.normal_(0, 0.5)
    save_reward_model(rm, tmp_path / "rm")
    tok.save(tmp_path / "rm")
    record = {"prompt": [{"role": "user", "content": "Say hello."}]}
    samples = [Sample(record, [{"role": "assistant", "content": text}], final=text) for text in ("Hello!", "No.")]
    total, parts = build_rewards([{"type": "reward_model", "path": str(tmp_path / "rm"), "weight": 2}])(samples)
    want = rm.eval().score_conversations(tok, [s.messages for s in samples])
    assert parts["reward_model"] == pytest.approx(want, abs=1e-5)
    assert total == pytest.approx([2 * w for w in want], abs=1e-5)
    assert want[0] != pytest.approx(want[1])
