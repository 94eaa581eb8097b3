"""Self-Contrast: the similarity measures by hand, negatives picked from hand-made samples, and real
runs of the embedded model through `openglm self-contrast` and the speedrun's DPO stage."""

import json

import pytest
from typer.testing import CliRunner

from openglm.align.self_contrast import (
    ALL_EMPTY,
    ALL_MATCHED,
    ALL_SIMILAR,
    SIMILARITIES,
    canonical,
    char_similarity,
    contrast,
    is_wrong,
    read_item,
    token_similarity,
)
from openglm.cli import app
from openglm.data.synth import generate_tasks, write_jsonl

runner = CliRunner()


def say(text, metadata=""):
    return [{"role": "assistant", "metadata": metadata, "content": text}]


@pytest.mark.parametrize("a, b, want", [
    ("abcd", "abce", 0.75),           # 3 matched of 8 characters: 2 * 3 / 8
    ("abc", "xyz", 0.0),
    ("", "", 1.0),
    ("kitten", "sitting", 8 / 13),    # "ittn" matched: 2 * 4 / 13
])
def test_character_similarity_is_difflibs_ratio(a, b, want):
    assert char_similarity(a, b) == pytest.approx(want)


@pytest.mark.parametrize("a, b, want", [
    ("the cat sat", "the cat ran", 2 / 4),
    ("the the cat", "cat the", 1.0),                  # sets: repeats and order do not count
    ("你好世界", "你好", 2 / 4),                        # Chinese character by character
    ('{"city": "Paris"}', '{"city": "Rome"}', 5 / 7),  # { } " : city shared; Paris, Rome not
    ("", "", 1.0),
    ("a", "", 0.0),
])
def test_token_similarity_is_the_jaccard_index_of_token_sets(a, b, want):
    assert token_similarity(a, b) == pytest.approx(want)


def test_exact_similarity_and_the_canonical_form_of_calls():
    assert SIMILARITIES["exact"]("a", "a") == 1.0 and SIMILARITIES["exact"]("a", "b") == 0.0
    one = canonical('get_weather\n{"city": "Paris", "date": "2024-01-02"}')
    other = canonical('get_weather\n{"date":"2024-01-02","city":"Paris"}')
    assert one[2] == other[2] == 'get_weather\n{"city": "Paris", "date": "2024-01-02"}'
    assert not is_wrong(one, other)
    assert is_wrong(canonical("python\nprint(1 + 2)"), canonical("python\nprint(1 - 2)"))
    assert is_wrong(canonical("\nThe result is 3."), canonical("\nThe result is 4."))
    assert not is_wrong(canonical("\nThe result is 3."), canonical("\nThe result is 3.  "))
    assert is_wrong(canonical('get_weather\n{"city": "Paris"}'), canonical("get_weather\n{not json"))
    assert is_wrong(canonical("python\nprint(3)"), canonical("\nThe result is 3."))


def test_negatives_are_wrong_dissimilar_distinct_and_most_dissimilar_first():
    target = {"role": "assistant", "metadata": "python", "content": "print(123456 * 789)"}
    replies = [[],                                         # empty
               say("print(123456 * 789)", "python"),       # matched
               say("print(123456 * 788)", "python"),       # wrong, but 0.94 similar
               say("The result is 97406784."),             # wrong and far
               say("The result is 97406784."),             # the same again
               say("print(123456 + 789)", "python"),       # wrong, 0.92 similar
               say('{"city": "Paris"}', "get_weather")]    # wrong and far
    negatives, seen = contrast(target, replies, char_similarity, 0.9)
    assert seen == {"empty": 1, "matched": 1, "too_similar": 2, "negative": 2, "duplicate": 1}
    scores = [s for s, _ in negatives]
    assert scores == sorted(scores) and [r[0]["metadata"] for _, r in negatives] == ["get_weather", ""]
    assert scores[1] == pytest.approx(char_similarity("python\nprint(123456 * 789)", "The result is 97406784."))
    negatives, seen = contrast(target, replies, char_similarity, 1.0)  # nothing is too similar now
    assert seen["negative"] == 4 and seen["too_similar"] == 0


def test_the_target_is_the_first_assistant_turn_after_the_last_user_message():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "metadata": "python",
                                                             "content": "print(1 + 2)"},
                {"role": "observation", "content": "3"}, {"role": "assistant", "content": "3"}]
    item = read_item({"messages": messages}, "f:1")
    assert [m["content"] for m in item.prompt] == ["hi", "hello", "add 1 and 2"]
    assert item.target == {"role": "assistant", "metadata": "python", "content": "print(1 + 2)"}
    with pytest.raises(ValueError, match="f:2: no assistant reply after the last user message"):
        read_item({"messages": messages[:3]}, "f:2")
    with pytest.raises(ValueError, match=r"f:3: messages\[0\].role"):
        read_item({"messages": [{"role": "robot", "content": "x"}]}, "f:3")


@pytest.fixture(scope="module")
def contrast_run(tmp_path_factory):
    """`openglm self-contrast` on three synthetic tasks as write_jsonl writes them (system prompt and
    tools included), with the embedded model and the default similarity (chars < 0.9)."""
    d = tmp_path_factory.mktemp("contrast")
    write_jsonl(generate_tasks(3, seed=3), d / "tasks.jsonl")
    r = runner.invoke(app, ["self-contrast", str(d / "tasks.jsonl"), "-o", str(d / "out"), "--samples", "3",
                            "--pairs-per-prompt", "2", "--max-new-tokens", "20", "--temperature", "1.0"])
    assert r.exit_code == 0, r.output
    return d / "out", r


def test_the_command_accounts_for_every_prompt_and_its_pairs_load_for_dpo(contrast_run):
    from openglm.loading import load_for_inference
    from openglm.train.dpo import PreferencePairs

    out, r = contrast_run
    report = json.loads((out / "report.json").read_text())
    assert report["prompts"] == 3 == report["with_pairs"] + sum(report["without_pairs"].values())
    assert set(report["without_pairs"]) <= {ALL_MATCHED, ALL_SIMILAR, ALL_EMPTY}
    lines = (out / "dpo.jsonl").read_text().splitlines()
    assert len(lines) == report["pairs"] >= report["with_pairs"] >= 1
    assert sum(report["samples"][k] for k in ("empty", "matched", "too_similar", "negative", "duplicate")) == 3 * 3
    assert report["samples"]["negative"] - report["samples"]["unused"] == report["pairs"]
    pairs, load = PreferencePairs.load([out / "dpo.jsonl"], load_for_inference(None)[1], seq_len=2048)
    assert load.kept == len(pairs) == len(lines)
    for line in map(json.loads, lines):
        assert line["kind"] == "self_contrast" and line["similarity"] < 0.9 and line["chosen"] != line["rejected"]
    assert f"prompts: {report['with_pairs']} with pairs" in r.stdout


def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    bad.write_text(f"{good}\n\n{{not json\n")
    r = runner.invoke(app, ["self-contrast", str(bad), "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {bad}:3: not JSON") and r.stderr.count("\n") == 1
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    r = runner.invoke(app, ["self-contrast", str(bad), "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and r.stderr == f"error: {bad}:1: no assistant reply after the last user message to " \
                                           "contrast against\n"
    r = runner.invoke(app, ["self-contrast", str(bad), "-o", str(tmp_path / "out"), "--similarity", "cosine"])
    assert r.exit_code == 2 and "choose one of exact, chars, tokens" in r.stderr
    assert not (tmp_path / "out").exists()


def test_the_speedrun_draws_its_negatives_from_this_module(tmp_path):
    """The DPO stage's Self-Contrast pairs: one sample of the SFT model per task, exact comparison."""
    from openglm.embedded import EMBEDDED_DIR
    from openglm.speedrun import Speedrun

    run = Speedrun(tmp_path, budget="smoke")
    run.stage_dir("sft").mkdir(parents=True)
    (run.stage_dir("sft") / "final").symlink_to(EMBEDDED_DIR)
    tasks = generate_tasks(2, seed=2)  # the second one's sample calls the wrong function
    pairs = run._self_contrast(tasks)
    assert pairs and all(p["kind"] == "self_contrast" and p["similarity"] == 0.0 for p in pairs)
    for p in pairs:
        task = next(t for t in tasks if t.prompt[-1]["content"] == p["messages"][-1]["content"])
        assert p["chosen"] == task.messages[len(task.prompt)] and p["rejected"] != p["chosen"]
