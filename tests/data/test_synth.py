"""Synthetic agent tasks: determinism, held-out disjointness, and correct observations."""

import json
import re

from openglm import chat
from openglm.data.synth import generate_tasks, world

CITY_NAMES = re.compile("|".join(map(re.escape, sorted({n for c in world.CITIES for n in (c.en, c.zh)},
                                                        key=len, reverse=True))))


def skeleton(text: str) -> str:
    """A user message with its numbers, dates and city names blanked out: the template."""
    text = CITY_NAMES.sub("<C>", text)
    for code in list(world.RATES_PER_USD) + list(world.UNIT_KIND):
        text = re.sub(rf"\b{code}\b", "<U>", text) if code.isascii() else text
    return re.sub(r"\d[\d\-.]*", "<N>", text)


TRAIN = generate_tasks(1500, seed=0, split="train")
HELDOUT = generate_tasks(400, seed=0, split="heldout")


def test_same_seed_same_tasks_and_prefix_stability():
    again = generate_tasks(1500, seed=0, split="train")
    assert [t.to_json() for t in again] == [t.to_json() for t in TRAIN]
    assert [t.to_json() for t in generate_tasks(10, seed=0)] == [t.to_json() for t in TRAIN[:10]]
    assert [t.to_json() for t in generate_tasks(10, seed=1)] != [t.to_json() for t in TRAIN[:10]]


def test_heldout_templates_never_appear_in_training():
    train = {skeleton(t.prompt[-1]["content"]) for t in TRAIN}
    held = {skeleton(t.prompt[-1]["content"]) for t in HELDOUT if t.kind != "plain-chat"}
    assert held and not (held & train)


def test_heldout_cities_never_appear_in_training():
    held = [c for c in world.CITIES if c.heldout]
    text = json.dumps([t.messages for t in TRAIN], ensure_ascii=False)
    assert len(held) >= 10
    assert not [c.en for c in held if c.en in text or c.zh in text]


def test_made_up_cities_are_training_only_and_never_overlap_real_names():
    made_up = [c for c in world.CITIES if c.synthetic]
    real = [n for c in world.CITIES if not c.synthetic for n in (c.en, c.zh)]
    assert len(made_up) >= 200 and not any(c.heldout for c in made_up)
    names = [n for c in made_up for n in (c.en, c.zh)]
    assert len(set(names)) == len(names)
    assert not [(a, b) for a in names for b in real if a in b or b in a]
    shipped = {d["id"] for d in world.documents()}
    train = {d["id"] for d in world.documents("train")}
    made_up_titles = {t for c in made_up for t in (f"{c.en} population", f"{c.zh}人口")}
    assert not made_up_titles & {d["title"] for d in world.documents()}  # the shipped collection is real
    assert len(train - shipped) == 2 * len(made_up)
    used = {t.calls[0]["arguments"]["args"][0] for t in TRAIN if t.kind.startswith("browser")}
    assert sum(any(q.startswith(c.en) or q.startswith(c.zh) for c in made_up) for q in used) > len(used) / 2


def test_made_up_chinese_names_use_the_characters_of_heldout_names():
    # A name character never seen in a training name was not copied (沈 of 沈阳, 雅 of 雅加达);
    # the made-up names draw on the 2,000 most frequent characters.
    made_up = "".join(c.zh for c in world.CITIES if c.synthetic)
    held = "".join(c.zh for c in world.CITIES if c.heldout)
    pool = set(world._COMMON_HAN + world._MORE_HAN)
    assert len(pool) == 2000 and set(made_up) <= pool
    assert {"沈", "雅", "滨", "圳", "黎", "顿"} <= set(made_up)
    # Left out: 釜 (rarer than rank 2,000) and characters of country names, which every population
    # page holds (in a made-up name they would make the search rank other pages first).
    assert {ch for ch in held if ch not in made_up} == {"釜", "西", "加", "斯", "奥", "兰"}


def test_training_questions_are_sometimes_dressed_and_heldout_ones_never():
    from openglm.data.synth.tasks import FILLERS

    def dressed(t):
        q = t.prompt[-1]["content"]
        pre, suf = FILLERS[t.lang]
        return any(q.startswith(p) for p in pre) or any(q.endswith(x) for x in suf)

    asked = [t for t in TRAIN if t.calls]
    assert 0.3 < sum(map(dressed, asked)) / len(asked) < 0.7
    assert not any(dressed(t) for t in HELDOUT if t.calls)


def test_arithmetic_operands_are_split_by_rule():
    for tasks, want in ((TRAIN, False), (HELDOUT, True)):
        operands = [int(n) for t in tasks if t.kind.startswith("arith")
                    for n in re.findall(r"\d+", t.calls[0]["arguments"]) if int(n) > 100]
        assert len(operands) > 50
        assert all((n % 7 == 3) == want for n in operands)


def test_operator_twins_swap_the_operator_word_and_keep_clear_of_heldout_phrasings():
    import difflib

    from openglm.data.synth.tasks import ARITH, operator_twins

    OPERATOR_TWINS, TEMPLATES_WITH_TWINS = operator_twins()

    assert "请计算{a}与{b}的差。" in OPERATOR_TWINS["sub"]["zh"]  # from the add template "请计算{a}与{b}的和。"
    assert "Calculate {a} divided by {b}. Round to 2 decimals." in OPERATOR_TWINS["div"]["en"]
    heldout = [templates[lang][-1] for templates, _, _ in ARITH.values() for lang in ("en", "zh")]
    for op, by_lang in OPERATOR_TWINS.items():
        for lang, twins in by_lang.items():
            assert len(twins) >= 5 and set(twins) <= set(TEMPLATES_WITH_TWINS[op][lang][:-1])  # training ones only
            assert all(difflib.SequenceMatcher(None, t, h).ratio() < 0.85 for t in twins for h in heldout)
    # "减掉…还剩" belongs to subtraction alone: no "加掉…还剩" twin
    assert not any("掉" in t for twins in OPERATOR_TWINS.values() for t in twins["zh"])
    # every Chinese training template names only its own operation's words: twins swapped them all
    words = {"add": "加|的和|之和|\\+", "sub": "减|差|-", "mul": "乘|积|×", "div": "除|商|÷"}
    for op in words:
        for template in TEMPLATES_WITH_TWINS[op]["zh"][:-1]:
            assert {o for o, pattern in words.items() if re.search(pattern, template)} <= {op}, template


def test_without_twins_training_questions_come_from_the_hand_written_templates_and_heldout_is_unchanged():
    from openglm.data.synth.tasks import operator_twins

    patterns = [re.compile(re.escape(t).replace(re.escape("{a}"), r"[\d.]+").replace(re.escape("{b}"), r"[\d.]+"))
                for by_lang in operator_twins()[0].values() for ts in by_lang.values() for t in ts]

    def twin_questions(tasks):
        questions = [t.prompt[-1]["content"] for t in tasks if t.kind.startswith("arith")]
        return sum(any(p.search(q) for p in patterns) for q in questions)

    assert twin_questions(generate_tasks(600, seed=5, twins=False)) == 0
    assert twin_questions(generate_tasks(600, seed=5)) >= 40  # 68 of 199
    heldout = [t.to_json() for t in generate_tasks(200, seed=5, split="heldout")]
    assert heldout == [t.to_json() for t in generate_tasks(200, seed=5, split="heldout", twins=False)]


def test_observations_are_what_the_tools_return_and_answers_quote_them():
    for t in TRAIN[:300]:
        if not t.calls:
            continue
        call, obs, final = t.messages[-3], t.messages[-2], t.messages[-1]
        assert obs["role"] == "observation" and final["role"] == "assistant" and final["metadata"] == ""
        if call["metadata"] == "simple_browser":
            continue  # checked in test_browser_tasks_cite_the_page_they_opened
        if call["metadata"] == "python":
            expected = str(eval(call["content"].removeprefix("print(")[:-1]))  # independent re-evaluation
        else:
            args = json.loads(call["content"])
            expected = json.dumps(world.FUNCTIONS[call["metadata"]](**args), ensure_ascii=False)
            tool_names = [x["function"]["name"] for x in t.messages[0]["tools"] if x["type"] == "function"]
            assert call["metadata"] in tool_names  # the needed tool is offered
            assert list(args) == list(world.FUNCTION_SCHEMAS[call["metadata"]]["parameters"]["required"])
        assert obs["content"] == expected
        assert t.answer and t.answer in final["content"]


def test_every_task_renders_and_parses_in_the_glm4_format():
    for t in TRAIN[:200] + HELDOUT[:100]:
        text = chat.render(t.messages, add_generation_prompt=False)
        assert text.startswith("[gMASK]<sop>")
        for m in t.messages:
            if m["role"] == "assistant" and m["metadata"]:
                reply = chat.parse_assistant(f"{m['metadata']}\n{m['content']}")
                assert reply.error is None and reply.tool_calls[0].name == m["metadata"]


def test_the_mix_covers_every_family_and_both_languages():
    kinds = {t.kind.split("-")[0] for t in TRAIN}
    assert kinds == {"arith", "function", "browser", "plain", "refusal"}
    assert {t.lang for t in TRAIN} == {"en", "zh"}


def test_browser_tasks_cite_the_page_they_opened():
    tasks = [t for t in TRAIN if t.kind.startswith("browser")]
    assert len(tasks) > 100
    for t in tasks:
        turns = t.messages[2:]
        assert [m["metadata"] for m in turns[:4]] == ["simple_browser", "browser_result", "simple_browser",
                                                      "quote_result"]
        page_id = int(re.fullmatch(r"mclick\(\[(\d+)\]\)", turns[2]["content"]).group(1))
        quote = turns[3]["content"]
        cited = re.findall(r"【(\d+)†([^】]+)】", t.messages[-1]["content"])
        assert cited and all(int(i) == page_id and quote.startswith(f"【{i}†{title}】") for i, title in cited)
        title = quote.split("†", 1)[1].split("】", 1)[0]
        city = next(c for c in world.CITIES if title in (f"{c.en} population", f"{c.zh}人口"))
        assert str(city.pop2010) in quote and str(city.pop2020) in quote
        if t.kind == "browser-fact":
            assert t.answer in (str(city.pop2010), str(city.pop2020))
        else:  # the CAGR computed from the page's figures
            assert float(t.answer) == round(((city.pop2020 / city.pop2010) ** 0.1 - 1) * 100, 2)


def test_preference_pairs_contrast_a_correct_and_a_wrong_step():
    from openglm.data.synth import preference_pairs

    pairs = preference_pairs(TRAIN[:300], seed=0)
    assert pairs == preference_pairs(TRAIN[:300], seed=0)
    assert {p["kind"] for p in pairs} == {"action", "answer"}
    for p in pairs:
        chosen, rejected = p["chosen"], p["rejected"]
        assert chosen != rejected and p["messages"][-1]["role"] in ("user", "observation")
        if p["kind"] == "action" and rejected["metadata"] in world.FUNCTION_SCHEMAS:
            args = json.loads(rejected["content"])
            required = world.FUNCTION_SCHEMAS[rejected["metadata"]]["parameters"]["required"]
            # a wrong tool, or the right one with a required argument missing
            assert rejected["metadata"] != chosen["metadata"] or set(args) != set(required)
        if p["kind"] == "answer":
            assert chosen["metadata"] == rejected["metadata"] == ""

    def blank(message):
        return re.sub(r" [-+*/] ", " ? ", message["content"])

    swapped = [p for p in pairs if p["kind"] == "action" and p["chosen"]["metadata"] == "python"
               and blank(p["chosen"]) == blank(p["rejected"]) and p["chosen"] != p["rejected"]]
    assert len(swapped) >= 5  # the wrong operator on the same numbers


def test_warmup_conversations_are_short_first_actions_and_repeats():
    from openglm.data.synth import warmup_conversations

    tasks = generate_tasks(200, seed=4)
    chats = warmup_conversations(tasks, repeat_fraction=0.3, seed=1)
    assert chats == warmup_conversations(tasks, repeat_fraction=0.3, seed=1)
    repeats = 0
    for task, conv in zip(tasks, chats):
        assert [m["role"] for m in conv] == ["user", "assistant"]
        question = task.prompt[-1]["content"]
        if conv[1]["content"] != question:  # a first action: exactly the task's first reply
            assert conv[0]["content"] == question and conv[1] == task.messages[len(task.prompt)]
        else:
            repeats += 1
            assert conv[0]["content"].endswith(question) and conv[1]["metadata"] == ""
        chat.render(conv)
    assert 30 <= repeats <= 90  # ~30% of 200
    assert all(m["role"] != "system" for c in warmup_conversations(tasks, 0.0, 1) for m in c)


def test_a_share_of_warmup_conversations_are_whole_tasks_without_the_system_prompt():
    from openglm.data.synth import warmup_conversations

    tasks = generate_tasks(200, seed=4)
    plain = warmup_conversations(tasks, 0.3, seed=1)
    mixed = warmup_conversations(tasks, 0.3, seed=1, whole_fraction=0.4)
    whole = [i for i, (t, c) in enumerate(zip(tasks, mixed)) if c == t.messages[1:] and len(c) > 2]
    assert 50 <= len(whole) <= 110  # ~40% of the ~190 tasks that have more than one turn
    assert all(plain[i][1] == mixed[i][1] or i in whole for i in range(len(tasks)))  # the rest as before
    assert all(tasks[i].messages[0]["role"] == "system" for i in whole)


def test_heldout_dates_are_new_but_every_weekday_is_seen_in_training():
    def dates(tasks):
        return {t.calls[0]["arguments"]["date"] for t in tasks if t.kind == "function-day_of_week"}

    weekdays = {split: {world.day_of_week(d)["weekday"] for d in dates(tasks)}
                for split, tasks in (("train", TRAIN), ("heldout", HELDOUT))}
    assert not dates(TRAIN) & dates(HELDOUT)
    assert len(weekdays["train"]) == 7 and weekdays["heldout"] <= weekdays["train"]
