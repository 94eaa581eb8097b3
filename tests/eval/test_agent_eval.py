"""The agent evaluation scores a scripted model exactly: all right, or wrong in known ways."""

import json

import pytest

from openglm.agent import ReplayBackend
from openglm.data.synth import generate_tasks
from openglm.eval.agent import arguments_match, call_is_valid, evaluate, markdown

TASKS = [t for t in generate_tasks(60, seed=3, split="heldout")]


def pick(kinds):
    out = []
    for k in kinds:
        out.append(next(t for t in TASKS if t.kind.startswith(k)))
    return out


def turns(task):
    return [f"{m['metadata']}\n{m['content']}" for m in task.messages if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def sample():
    return pick(["arith", "function", "browser-fact", "browser-cagr", "refusal"])


def test_a_model_that_replays_the_reference_scores_perfectly(sample):
    script = []
    for t in sample:
        script += turns(t)
        if t.answer:  # the no-tools baseline run: a guess without the number
            script.append("\nI cannot compute that without tools.")
    summary = evaluate(ReplayBackend(script), sample, progress=False)
    o = summary["overall"]
    assert o["tasks"] == 5 and o["valid_call_rate"] == 1.0
    assert o["tool_choice"] == o["arguments_match"] == o["answer_with_tools"] == 1.0
    assert o["answer_without_tools"] == 0.0
    assert "| overall |" in markdown(summary)


def test_wrong_tool_bad_arguments_and_wrong_answer_are_scored_as_such(sample):
    arith, function = sample[0], sample[1]
    fn_call = next(m for m in function.messages if m["role"] == "assistant" and m["metadata"])
    args = json.loads(fn_call["content"])
    args.pop(next(iter(args)))
    script = [
        "python\nprint(1 + 1)", "\nThe result is 2.",  # arith: right tool, wrong numbers, wrong answer
        f"{fn_call['metadata']}\n{json.dumps(args)}", "\nSorry.",  # function: schema-invalid arguments
    ]
    summary = evaluate(ReplayBackend(script), [arith, function], with_baseline=False, progress=False)
    a, f = summary["results"]
    assert a["tool_choice"] and not a["arguments"] and not a["answer"] and a["valid_calls"] == 1
    assert f["tool_choice"] and not f["arguments"] and f["valid_calls"] == 0


def test_argument_matching_is_by_value():
    assert arguments_match("get_weather", {"city": "Paris", "date": "2021-01-02"},
                           {"city": "Paris", "date": "2021-01-02"})
    assert arguments_match("convert_units", {"value": 5.0, "from_unit": "km", "to_unit": "mile"},
                           {"value": 5, "from_unit": "km", "to_unit": "mile"})
    assert not arguments_match("get_weather", {"city": "paris", "date": "2021-01-02"},
                               {"city": "Paris", "date": "2021-01-02"})
    assert arguments_match("python", "x = 6 * 7\nprint(x)", "print(42)")
    assert not arguments_match("python", "print(41)", "print(42)")
    offered = {"python": {"type": "python"}}
    assert call_is_valid("python", "print(1)", offered) and not call_is_valid("get_weather", {}, offered)
