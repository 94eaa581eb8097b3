"""Self-critique: the score parser and the rule critic by hand, real runs of the embedded model through
`openglm selfcritique`, and a critic behind a real OpenAI-compatible server on 127.0.0.1."""

import json

import pytest
from typer.testing import CliRunner

from live_server import KEY, running
from openglm.align.selfcritique import (
    BELOW_MIN,
    CRITIC_PROMPT,
    NO_MARGIN,
    NO_REFERENCE,
    ModelCritic,
    RuleCritic,
    critic_prompt,
    parse_score,
    read_problem,
    self_critique,
)
from openglm.cli import app

runner = CliRunner()
# a problem the embedded model answers right at some seeds and wrong at others (seed 6: both)
SUM = {"messages": [{"role": "user", "content": "Give me the sum 759763 + 225248."},
                    {"role": "assistant", "metadata": "python", "content": "print(759763 + 225248)"},
                    {"role": "observation", "content": "985011"}], "answer": "985011"}


@pytest.mark.parametrize("text, want", [
    ("The answer is right.\nScore: 8", 0.8),
    ("Score: 7/10", 0.7),
    ("score of 9 out of 10", 0.9),
    ("**Score:** 10", 1.0),
    ("Rating = 0.85", 0.85),
    ("I'd give it 6/10.", 0.6),
    ("评分：8分", 0.8),
    ("这个答案不错，9分。", 0.9),
    ("7", 0.7),
    ("1", 0.1),              # an integer is on the 1-10 scale ...
    ("1.0", 1.0),            # ... a decimal up to 1 is a score in [0, 1]
    ("45/100", 0.45),
    ("Score: 3. On reflection, score: 5", 0.5),  # the last one counts
    ("Scores go from 1 to 10. Score: 4", 0.4),
    ("Score: 15", None),     # out of range
    ("Score: 11/10", None),
    ("The result is a :func:`0.", None),
    ("no score here", None),
    ("", None),
])
def test_the_critique_score_parser(text, want):
    got = parse_score(text)
    assert got == pytest.approx(want) if want is not None else got is None


def test_the_rule_critic_compares_the_final_answer_and_a_call_scores_zero():
    problem = read_problem({"question": "What is 1,000 + 234?", "answer": 1234}, "f:1")
    assert problem.reference == "1234" and problem.prompt == [{"role": "user", "content": "What is 1,000 + 234?",
                                                               "metadata": ""}]
    replies = [[{"role": "assistant", "metadata": "", "content": "So it is \\boxed{1,234}."}],
               [{"role": "assistant", "metadata": "", "content": "It is 1235."}],
               [{"role": "assistant", "metadata": "python", "content": "print(1000 + 234)"}]]
    assert [s for s, _ in RuleCritic().grade(problem, replies)] == [1.0, 0.0, 0.0]


def test_problems_and_the_critique_prompt():
    problem = read_problem(SUM, "f:1")
    assert problem.prompt == [{**m, "metadata": m.get("metadata", "")} for m in SUM["messages"]]
    assert problem.question == "Give me the sum 759763 + 225248.\n[assistant python]\nprint(759763 + 225248)\n" \
                               "[observation]\n985011"
    reply = [{"role": "assistant", "metadata": "", "content": " The result is 985011."}]
    shown = critic_prompt(CRITIC_PROMPT, problem, reply)
    assert "Reference answer: 985011" in shown and shown.count("The result is 985011.") == 1
    no_ref = read_problem({"messages": SUM["messages"] + [{"role": "assistant", "content": "x"}]}, "f:2")
    assert no_ref.prompt == problem.prompt and no_ref.reference is None  # the dataset's own reply is left out
    assert "Reference" not in critic_prompt(CRITIC_PROMPT, no_ref, reply)
    assert critic_prompt(r"\boxed{x} {question}|{reference}|{answer}", no_ref, reply).startswith(r"\boxed{x} Give")
    for record, message in [({"messages": [{"role": "system", "content": "x"}]}, "f:3: no user message"),
                            ({"prompt": "x"}, "f:3: expected 'messages'"),
                            ({"question": "q", "answer": [1]}, "f:3: 'answer' must be a string or a number")]:
        with pytest.raises(ValueError, match=message):
            read_problem(record, "f:3")


@pytest.fixture(scope="module")
def rule_run(tmp_path_factory):
    """The rule critic on three problems: one answered both right and wrong, one whose reference no
    answer matches, one without a reference."""
    d = tmp_path_factory.mktemp("critique")
    wrong_reference = {**SUM, "answer": "17"}
    no_reference = {"question": "What is 2 + 2?"}
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (SUM, wrong_reference, no_reference)))
    r = runner.invoke(app, ["selfcritique", str(d / "in.jsonl"), "-o", str(d / "out"), "--samples", "4",
                            "--max-new-tokens", "24", "--temperature", "1.0", "--seed", "6"])
    assert r.exit_code == 0, r.output
    return d / "out", r


def test_every_problem_is_kept_or_dropped_with_its_reason_for_each_output(rule_run):
    out, r = rule_run
    report = json.loads((out / "report.json").read_text())
    assert report["problems"] == 3
    assert report["rft"] == {"kept": 1, "dropped": {BELOW_MIN: 1, NO_REFERENCE: 1}}
    assert report["dpo"] == {"kept": 1, "dropped": {NO_MARGIN: 1, NO_REFERENCE: 1}}
    assert report["answers"] == {"sampled": 8, "empty": 0, "graded": 8, "unparsable": 0}
    assert "rft.jsonl: 1 kept, 2 dropped" in r.stdout and "dpo.jsonl: 1 pairs, 2 dropped" in r.stdout


def test_the_outputs_load_as_sft_and_dpo_data(rule_run):
    from openglm.loading import load_for_inference
    from openglm.train.dpo import PreferencePairs
    from openglm.train.sft import load_conversations

    out, _ = rule_run
    tok = load_for_inference(None)[1]
    (rft,) = map(json.loads, (out / "rft.jsonl").read_text().splitlines())
    assert rft["score"] == 1.0 and rft["messages"][-1]["content"].strip() == "The result is 985011."
    (pair,) = map(json.loads, (out / "dpo.jsonl").read_text().splitlines())
    assert (pair["chosen_score"], pair["rejected_score"]) == (1.0, 0.0) and pair["messages"][-1]["content"] == "985011"
    examples, load = load_conversations([out / "rft.jsonl"], tok, seq_len=2048)
    assert load.kept == len(examples) == 1
    pairs, load = PreferencePairs.load([out / "dpo.jsonl"], tok, seq_len=2048)
    assert load.kept == len(pairs) == 1


def test_a_model_critic_that_writes_no_score_is_counted_not_trusted():
    """The embedded model is no grader: its critiques mostly hold no score, and each is counted."""
    from openglm.loading import load_for_inference

    model, tok = load_for_inference(None)
    problems = [read_problem(SUM, "f:1")]
    rft, dpo, report = self_critique(model, tok, problems, ModelCritic(model, tok, max_new_tokens=16),
                                     critic_name="self", samples=2, max_new_tokens=16)
    a = report.answers
    assert a["sampled"] == 2 == a["empty"] + a["graded"] + a["unparsable"] and a["unparsable"] >= 1
    assert report.rft.total == report.dpo.total == 1 and len(rft) == report.rft.kept and len(dpo) == report.dpo.kept
    assert len(report.unparsable_examples) == a["unparsable"]


def test_a_critic_behind_an_openai_endpoint_grades_as_the_same_model_in_process(tmp_path, monkeypatch):
    """`--critic openai:URL` against `openglm serve`'s app (the embedded model, an API key) on 127.0.0.1,
    the key read from OPENAI_API_KEY: the same critiques, so the same files, as `--critic self`. The
    template asks for a copy the model makes well, so the scores parse."""
    from openglm.loading import load_for_inference
    from openglm.serve import create_app

    (tmp_path / "in.jsonl").write_text(json.dumps({"question": SUM["messages"][0]["content"], "answer": "985011"})
                                       + "\n")
    (tmp_path / "critic.txt").write_text("请原样重复：7/10 {answer}", encoding="utf-8")  # "repeat exactly: ..."
    args = ["selfcritique", str(tmp_path / "in.jsonl"), "--samples", "2", "--max-new-tokens", "12",
            "--critic-prompt", str(tmp_path / "critic.txt"), "--critic-tokens", "16"]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "self"), "--critic", "self"])
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with running(create_app(*load_for_inference(None), "glm-nano", api_key=KEY)) as url:
        r = runner.invoke(app, [*args, "-o", str(tmp_path / "api"), "--critic", f"openai:{url}/v1",
                                "--critic-model", "glm-nano"])
        assert r.exit_code == 0, r.output
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        r = runner.invoke(app, [*args, "-o", str(tmp_path / "denied"), "--critic", f"openai:{url}/v1",
                                "--critic-model", "glm-nano"])
        assert r.exit_code == 1 and r.stderr.startswith(f"error: critic {url}/v1/chat/completions answered HTTP 401")
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("self", "api")]
    assert reports[1].pop("critic") == f"openai:{url}/v1" and reports[0].pop("critic") == "self"
    assert reports[0] == reports[1] and reports[0]["answers"]["graded"] >= 1 and reports[0]["mean_score"] == 0.7
    for name in ("rft.jsonl", "dpo.jsonl"):
        assert (tmp_path / "self" / name).read_text() == (tmp_path / "api" / name).read_text()


@pytest.mark.parametrize("lines, extra, message", [
    ([{"question": "q"}, "[1, 2]"], [], "{bad}:2: expected a JSON object, got list"),
    (["{oops"], [], "{bad}:1: not JSON"),
    ([{"messages": [{"role": "user", "content": 3}]}], [], "{bad}:1: messages[0].content: expected str"),
    ([{"question": "q"}], ["--critic", "gpt"], "unknown critic 'gpt': choose rule, self, model:DIR or openai:URL"),
    ([{"question": "q"}], ["--critic", "openai:http://127.0.0.1:1/v1"], "--critic openai:URL needs --critic-model"),
])
def test_a_mistake_is_one_error_line(tmp_path, lines, extra, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    r = runner.invoke(app, ["selfcritique", str(bad), "-o", str(tmp_path / "out"), *extra])
    assert r.exit_code in (1, 2) and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message.format(bad=bad) in r.stderr and not (tmp_path / "out").exists()


def test_a_critic_prompt_must_show_the_answer(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    (tmp_path / "critic.txt").write_text("Grade {question}")
    r = runner.invoke(app, ["selfcritique", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out"), "--critic",
                            "self", "--critic-prompt", str(tmp_path / "critic.txt")])
    assert r.exit_code == 2 and "has no {answer} for the critic to read" in r.stderr
