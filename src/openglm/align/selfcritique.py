"""ChatGLM-Math's self-critique pipeline (Xu et al. 2024): sample answers, let a critic grade them,
keep the best for rejective fine-tuning (RFT) and best-vs-worst pairs for DPO.

A critic gives each answer a score in [0, 1]:

- ``rule``: the final answer against the problem's reference (:func:`~.rewards.answer_matches`);
  a reply that calls a tool has no final answer and scores 0;
- a model (the policy itself, another checkpoint, or an OpenAI-compatible endpoint) reads a
  critique prompt with the question, the reference when there is one and the answer, and
  writes a critique ending in a score; :func:`parse_score` reads it (1-10 scales become /10).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from openglm.agent.backends import BackendError, OpenAIBackend
from openglm.chat import Message
from openglm.infer import ContextLengthError, Sampling
from openglm.infer.generate import encode_prompt

from .rewards import answer_matches
from .samples import Tally, generate_rows, messages_of, one_or_list, read_jsonl, sample_replies

CRITIC_PROMPT = """Grade an answer to the question below.

Question:
{question}
{reference}
Answer to grade:
{answer}

Is the answer correct and its reasoning sound? Write a short critique, then a last line "Score: N" \
with N from 1 (wrong) to 10 (correct and complete)."""
REFERENCE = "\nReference answer: {reference}\n"

# why a problem gave nothing to an output
NO_REFERENCE = "no reference answer (rule critic)"
EMPTY = "every sample empty"
UNPARSABLE = "no critique gave a score"
TOO_LONG = "prompt longer than the model's context"
BELOW_MIN = "best score below min_score"
NO_MARGIN = "best and worst closer than min_margin"

SAMPLING = Sampling(0.8, top_p=0.95, seed=0)


# ---- scores -------------------------------------------------------------------------------------
_NUM = r"(-?\d+(?:\.\d+)?)"
_OUT_OF = r"\s*(?:/|out\s+of)\s*(\d+)"
_KEYWORD = re.compile(rf"(?:score|rating|grade|评分|得分|分数)\s*(?:is|of|[:：=])?\s*\**\s*{_NUM}(?:{_OUT_OF})?",
                      re.IGNORECASE)
_FRACTION = re.compile(rf"{_NUM}{_OUT_OF}", re.IGNORECASE)
_POINTS = re.compile(rf"{_NUM}\s*分")


def parse_score(text: str) -> float | None:
    """The score a critique ends with, in [0, 1]; None when it gives none.

    Tried in order, the last match of each: ``Score: 8`` (also rating, grade, 评分, 得分,
    分数; with an optional ``/10`` or ``out of 10``), a bare ``8/10``, ``8分``, and a critique
    that is nothing but a number. ``N/D`` is N / D; without a denominator a decimal in [0, 1]
    (``0.8``) is taken as it is and any other number up to 10 is on the 1-10 scale (``8`` and
    ``1`` are 0.8 and 0.1). Out of range: None.
    """
    for pattern in (_KEYWORD, _FRACTION, _POINTS):
        found = pattern.findall(text)
        if found:
            value, den = found[-1] if isinstance(found[-1], tuple) else (found[-1], "")
            return _normalise(value, den)
    bare = text.strip().rstrip(".。")
    return _normalise(bare, "") if re.fullmatch(_NUM, bare) else None


def _normalise(value: str, den: str) -> float | None:
    v = float(value)
    if den:
        d = float(den)
        return v / d if d > 0 and 0 <= v <= d else None
    if "." in value and 0 <= v <= 1:
        return v
    return v / 10 if 0 <= v <= 10 else None


# ---- problems and critics -----------------------------------------------------------------------
@dataclass
class Problem:
    where: str
    prompt: list[dict]
    reference: str | None = None
    tools: list | None = None

    @property
    def question(self) -> str:
        """What the critic is shown: the last user message, then any calls and results after it."""
        users = [i for i, m in enumerate(self.prompt) if m["role"] == "user"]
        lines = [self.prompt[users[-1]]["content"]]
        for m in self.prompt[users[-1] + 1:]:
            lines.append(f"[{m['role']} {m['metadata']}]\n{m['content']}" if m["metadata"] else
                         f"[{m['role']}]\n{m['content']}")
        return "\n".join(lines)


def read_problem(record: dict, where: str) -> Problem:
    """``{"messages": [...], "answer"?}`` or ``{"question": str, "answer"?}``. The prompt runs to
    the last user or observation message: a trailing assistant reply (a dataset's own solution)
    is left out."""
    if "messages" not in record and isinstance(record.get("question"), str):
        messages = [{"role": "user", "content": record["question"], "metadata": ""}]
    elif "messages" in record:
        messages = messages_of(record, where)
    else:
        raise ValueError(f"{where}: expected 'messages' (a list) or 'question' (a string); keys: {sorted(record)}")
    asks = [i for i, m in enumerate(messages) if m["role"] in ("user", "observation")]
    if not asks or not any(m["role"] == "user" for m in messages[: asks[-1] + 1]):
        raise ValueError(f"{where}: no user message to answer")
    answer = record.get("answer")
    if isinstance(answer, (dict, list, bool)):
        raise ValueError(f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}")
    reference = str(answer).strip() if answer is not None else ""
    return Problem(where, messages[: asks[-1] + 1], reference or None, record.get("tools"))


def read_problems(path) -> list[Problem]:
    return [read_problem(record, where) for where, record in read_jsonl(path)]


def answer_shown(reply: list[dict]) -> str:
    """A reply as the critic reads it: text as written, a call as ``[calls NAME]`` and its body."""
    return "\n".join(f"[calls {m['metadata']}]\n{m['content']}" if m["metadata"] else m["content"].strip()
                     for m in reply)


def critic_prompt(template: str, problem: Problem, reply: list[dict]) -> str:
    """``template`` with {question}, {reference} and {answer} filled in (by replacement, so other
    braces, as in LaTeX, stay as they are)."""
    if template == CRITIC_PROMPT:
        reference = REFERENCE.replace("{reference}", problem.reference) if problem.reference else ""
    else:
        reference = problem.reference or ""
    return (template.replace("{question}", problem.question).replace("{reference}", reference)
            .replace("{answer}", answer_shown(reply)))


class RuleCritic:
    """1 when the final answer matches the reference, else 0."""

    needs_reference = True

    def grade(self, problem: Problem, replies: Sequence[list[dict]]) -> list[tuple[float | None, str]]:
        out = []
        for reply in replies:
            called = any(m["metadata"] for m in reply)
            right = not called and answer_matches("\n".join(m["content"] for m in reply), problem.reference)
            out.append((float(right), "calls a tool" if called else "matches" if right else "does not match"))
        return out


class WritingCritic:
    """A critic that writes a critique per answer; the score is read from it (:func:`parse_score`)."""

    needs_reference = False

    def __init__(self, template: str = CRITIC_PROMPT, max_new_tokens: int = 128):
        self.template, self.max_new_tokens = template, max_new_tokens

    def critiques(self, prompts: list[str]) -> list[str]:
        raise NotImplementedError

    def grade(self, problem: Problem, replies: Sequence[list[dict]]) -> list[tuple[float | None, str]]:
        texts = self.critiques([critic_prompt(self.template, problem, r) for r in replies])
        return [(parse_score(t), t) for t in texts]


class ModelCritic(WritingCritic):
    """An openglm model (greedy) writes the critiques of one problem's answers in one batch."""

    def __init__(self, model, tok, template: str = CRITIC_PROMPT, max_new_tokens: int = 128):
        super().__init__(template, max_new_tokens)
        self.model, self.tok = model, tok

    def critiques(self, prompts):
        ids = [encode_prompt(self.tok, [{"role": "user", "content": p}]) for p in prompts]
        fits = [i for i, x in enumerate(ids) if len(x) < self.model.config.max_seq_len]
        out = [""] * len(prompts)  # a critique that cannot be asked gives no score
        if fits:
            rows = generate_rows(self.model, self.tok, [ids[i] for i in fits], self.max_new_tokens, Sampling())
            for i, row in zip(fits, rows):
                out[i] = self.tok.decode(row, skip_special=True)
        return out


class EndpointCritic(WritingCritic):
    """A model behind an OpenAI-compatible chat-completions endpoint (temperature 0), one request
    per answer."""

    def __init__(self, url: str, model: str, api_key: str | None, template: str = CRITIC_PROMPT,
                 max_new_tokens: int = 128):
        super().__init__(template, max_new_tokens)
        self.backend = OpenAIBackend(url, api_key=api_key, model=model, temperature=0.0)

    def critiques(self, prompts):
        out = []
        for p in prompts:
            try:
                *_, done = self.backend.stream([Message("user", p)], [], max_tokens=self.max_new_tokens)
            except BackendError as e:  # the endpoint is down or refuses: every other answer would fail too
                raise ValueError(f"critic {e}") from None
            out.append(done.text)
        return out


# ---- the pipeline -------------------------------------------------------------------------------
@dataclass
class CritiqueReport:
    """problems = kept + dropped for each output; answers are counted by what became of them."""

    critic: str = "rule"
    samples: int = 0
    min_score: float = 0.7
    min_margin: float = 0.3
    rft: Tally = field(default_factory=Tally)
    dpo: Tally = field(default_factory=Tally)
    answers: Counter = field(default_factory=lambda: Counter(dict.fromkeys(("sampled", "empty", "graded",
                                                                            "unparsable"), 0)))
    unparsable_examples: list[str] = field(default_factory=list)
    score_sum: float = 0.0

    @property
    def problems(self) -> int:
        return self.rft.total

    def to_dict(self) -> dict:
        graded = self.answers["graded"]
        return {"problems": self.problems, "critic": self.critic, "samples_per_problem": self.samples,
                "min_score": self.min_score, "min_margin": self.min_margin, "rft": self.rft.to_dict(),
                "dpo": self.dpo.to_dict(), "answers": dict(self.answers),
                "mean_score": round(self.score_sum / graded, 4) if graded else None,
                "unparsable_examples": self.unparsable_examples}

    def summary(self) -> str:
        a = self.answers
        return "\n".join([
            f"self-critique: {self.problems} problems, {self.samples} samples each, critic {self.critic}",
            "  " + self.rft.line("rft.jsonl", "kept"), "  " + self.dpo.line("dpo.jsonl", "pairs"),
            f"  answers: {a['sampled']} sampled, {a['empty']} empty, {a['graded']} graded "
            f"(mean score {self.to_dict()['mean_score']}), {a['unparsable']} critiques without a score"])


def self_critique(model, tok, problems: Sequence[Problem], critic, *, critic_name: str = "rule", samples: int = 4,
                  max_new_tokens: int = 256, sampling: Sampling = SAMPLING,
                  min_score: float = 0.7, min_margin: float = 0.3,
                  progress: Callable[[int], None] | None = None) -> tuple[list[dict], list[dict], CritiqueReport]:
    """RFT records, DPO pairs and the report. Problem i samples with seed ``sampling.seed + i``."""
    report = CritiqueReport(critic_name, samples, min_score, min_margin)
    rft, dpo = [], []
    for i, problem in enumerate(problems):
        why = _critique_one(model, tok, problem, critic, report, rft, dpo, samples, max_new_tokens,
                            replace(sampling, seed=(sampling.seed or 0) + i))
        if why:
            report.rft.dropped[why] += 1
            report.dpo.dropped[why] += 1
        if progress:
            progress(1)
    return rft, dpo, report


def _critique_one(model, tok, problem, critic, report, rft, dpo, samples, max_new_tokens, sampling) -> str | None:
    """Grade one problem's samples and add what it gives to ``rft`` and ``dpo``; the reason both
    outputs drop it, if they do."""
    if critic.needs_reference and problem.reference is None:
        return NO_REFERENCE
    try:
        replies = sample_replies(model, tok, problem.prompt, problem.tools, samples, max_new_tokens, sampling)
    except ContextLengthError:
        return TOO_LONG
    report.answers["sampled"] += len(replies)
    replies = [r for r in replies if r]
    report.answers["empty"] += samples - len(replies)
    if not replies:
        return EMPTY
    scored = []
    for reply, (score, critique) in zip(replies, critic.grade(problem, replies)):
        if score is None:
            report.answers["unparsable"] += 1
            if len(report.unparsable_examples) < 5:
                report.unparsable_examples.append(critique[:500])
        else:
            report.answers["graded"] += 1
            report.score_sum += score
            scored.append((score, reply))
    if not scored:
        return UNPARSABLE
    # best: the highest score, worst: the lowest; ties go to the earlier sample
    best = max(scored, key=lambda s: s[0])
    worst = min(scored, key=lambda s: s[0])
    extra = {"tools": problem.tools} if problem.tools else {}
    if best[0] >= report.min_score:
        rft.append({"messages": problem.prompt + best[1], "score": best[0], **extra})
        report.rft.kept += 1
    else:
        report.rft.dropped[BELOW_MIN] += 1
    if best[0] - worst[0] >= report.min_margin and best[0] > worst[0]:
        dpo.append({"messages": problem.prompt, "chosen": one_or_list(best[1]), "rejected": one_or_list(worst[1]),
                    "chosen_score": best[0], "rejected_score": worst[0], "kind": "self_critique", **extra})
        report.dpo.kept += 1
    else:
        report.dpo.dropped[NO_MARGIN] += 1
    return None
