"""Task families: each builds one GLM-4-format conversation (official fine-tuning format).

A family picks a template (the last one per language is held out), entities and numbers
(held-out ones by the rules in world.py), the tools offered (the needed one plus
distractors), and writes the assistant's turns: the tool call, the observation the tool
really returns, and the final answer that quotes it.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import json
import random
import tempfile
from dataclasses import dataclass, field

from openglm.embedded import BROWSER_RESULTS  # results per search the shipped model was trained on

from . import world

PYTHON_TOOL = {"type": "python"}
BROWSER_TOOL = {"type": "simple_browser"}


@dataclass
class Task:
    kind: str
    lang: str
    split: str
    messages: list[dict]
    answer: str = ""  # text the final answer must contain ("" = nothing to check)
    calls: list[dict] = field(default_factory=list)  # expected calls: {"name", "arguments"}

    @property
    def prompt(self) -> list[dict]:
        """The conversation up to (and including) the first user message."""
        k = next(i for i, m in enumerate(self.messages) if m["role"] == "user")
        return self.messages[: k + 1]

    def to_json(self) -> dict:
        return {"kind": self.kind, "lang": self.lang, "split": self.split, "messages": self.messages,
                "answer": self.answer, "calls": self.calls}


def pick_template(rng: random.Random, templates: list[str], split: str) -> str:
    return templates[-1] if split == "heldout" else rng.choice(templates[:-1])


# Training questions get a greeting or a closing now and then, so a small model learns to find
# the numbers and names wherever they sit rather than at a template's fixed offsets.
FILLERS = {"en": (["Hi! ", "Quick question: ", "Please help: ", "Hey, ", "I need this: ", "For my homework: ",
                   "My colleague asked me this. ", "Sorry to bother you. ", "One more thing: "],
                  [" Thanks!", " Thank you.", " Please answer briefly.", " I need it soon.", " Just the answer, please."]),
           "zh": (["你好，", "请问", "麻烦你，", "问一下：", "帮个忙：", "我在做作业，", "同事问我：", "不好意思打扰一下，"],
                  ["谢谢！", "谢谢。", "请简要回答。", "越快越好。", "只要结果就行。"])}


def question(rng: random.Random, templates: list[str], split: str, lang: str, **fields) -> str:
    """A user question from the split's templates; training ones sometimes dressed with fillers."""
    text = pick_template(rng, templates, split).format(**fields)
    if split == "heldout":
        return text
    prefixes, suffixes = FILLERS[lang]
    if rng.random() < 0.3:
        text = rng.choice(prefixes) + text
    if rng.random() < 0.3:
        text += rng.choice(suffixes)
    return text


def number(rng: random.Random, lo: int, hi: int, split: str) -> int:
    while True:
        n = rng.randint(lo, hi)
        if world.operand_ok(n, split):
            return n


def run_python(code: str) -> str:
    """Run our own generated (trusted, arithmetic-only) code; the observation is its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__builtins__": {"print": print, "round": round, "abs": abs}})
    return out.getvalue().strip()


def offered_tools(rng: random.Random, needed: list[dict], min_extra: int = 0) -> list[dict]:
    """The needed tools plus distractors (min_extra..2 of them), in a random order."""
    pool = [PYTHON_TOOL, BROWSER_TOOL] + [world.function_tool(n) for n in world.FUNCTION_SCHEMAS]
    extra = [t for t in pool if t not in needed]
    tools = needed + rng.sample(extra, rng.randint(min_extra, 2))
    rng.shuffle(tools)
    return tools


def conversation(tools: list[dict] | None, user: str, turns: list[tuple[str, str, str]]) -> list[dict]:
    """turns: (role, metadata, content) after the user message."""
    msgs = [{"role": "system", "content": "", "tools": tools}] if tools else []
    msgs.append({"role": "user", "content": user, "metadata": ""})
    msgs += [{"role": r, "metadata": m, "content": c} for r, m, c in turns]
    return msgs


# ---- arithmetic solved with python -------------------------------------------------
# round() only where the exact result has more digits than the answer: a percent of an integer
# prints exactly as it is (n / 100 is the shortest float repr). With round() there too, the
# nano model dropped it for "{b}乘以{a}%" (5 of 33 held-out arithmetic tasks; docs/experiments.md).
ARITH = {
    "mul": ({"en": ["What is {a} times {b}?", "Calculate {a} multiplied by {b}.", "Multiply {a} by {b}.",
                    "What is the product of {a} and {b}?", "{a} times {b} equals what?", "Please work out {a} x {b}.",
                    "What is {a} * {b}?",
                    "Could you multiply {a} and {b}?", "I need {a} multiplied by {b}.",
                    "{a} multiplied by {b} is how much?", "Find the product {a} x {b}.",
                    "How much do you get when you multiply {a} by {b}?", "Give me {a} times {b}.",
                    "Compute {a} * {b}."],
             "zh": ["{a}乘以{b}等于多少？", "请计算{a}乘{b}。", "{a}和{b}的乘积是多少？", "帮我算{a}乘以{b}。",
                    "{a}乘{b}得多少？", "{a}×{b}等于多少？", "求{a}与{b}的积。",
                    "{a}乘上{b}是多少？", "我想知道{a}乘{b}的结果。", "请帮忙计算{a}与{b}相乘的积。", "{a}乘以{b}，结果是多少？", "计算：{a}×{b}。",
                    "能算一下{a}乘{b}吗？",
                    "算一下{a}×{b}。"]},
            lambda r, s: (number(r, 1000, 99999, s), number(r, 100, 9999, s)), "{a} * {b}"),
    "add": ({"en": ["What is {a} plus {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
                    "Calculate {a} + {b}.", "Please add {b} to {a}.", "{a} plus {b} equals what?",
                    "Could you add {a} and {b}?", "I need the total of {a} and {b}.", "Find {a} + {b}.",
                    "How much is {a} and {b} together?", "Give me the sum {a} + {b}.",
                    "Adding {b} to {a} gives what?",
                    "What do {a} and {b} sum to?"],
             "zh": ["{a}加{b}等于多少？", "请计算{a}与{b}的和。", "求{a}加上{b}的结果。", "帮我算{a}加{b}。",
                    "{a}与{b}之和是多少？", "{a}加上{b}得多少？",
                    "{a}加上{b}的总和是多少？", "我想知道{a}加{b}的结果。", "计算：{a}+{b}。", "能算一下{a}加{b}吗？", "{a}再加{b}是多少？",
                    "请把{a}和{b}加起来。",
                    "{a}和{b}相加是多少？"]},
            lambda r, s: (number(r, 10000, 999999, s), number(r, 10000, 999999, s)), "{a} + {b}"),
    "sub": ({"en": ["What is {a} minus {b}?", "Subtract {b} from {a}.", "Calculate {a} - {b}.",
                    "What is the difference between {a} and {b}?", "Take {b} away from {a}.", "{a} minus {b} equals what?",
                    "Could you subtract {b} from {a}?", "I need {a} minus {b}.", "Find {a} - {b}.",
                    "If I take {b} from {a}, what is left?", "Give me the difference {a} - {b}.",
                    "What remains of {a} after removing {b}?",
                    "How much is {a} - {b}?"],
             "zh": ["{a}减去{b}等于多少？", "请计算{a}减{b}。", "{a}减{b}得多少？", "帮我算{a}减去{b}。",
                    "从{a}中减去{b}是多少？", "求{a}减{b}的结果。", "求{a}与{b}的差。",
                    "{a}减掉{b}还剩多少？", "我想知道{a}减{b}的结果。", "计算：{a}-{b}。", "能算一下{a}减{b}吗？", "{a}去掉{b}后是多少？",
                    "请用{a}减去{b}。",
                    "{a}与{b}的差是多少？"]},
            lambda r, s: (number(r, 100000, 999999, s), number(r, 10000, 99999, s)), "{a} - {b}"),
    "div": ({"en": ["What is {a} divided by {b}? Round to 2 decimals.", "Divide {a} by {b} (2 decimals).",
                    "Calculate {a} / {b} to two decimal places.", "What is the quotient of {a} and {b}, rounded to 2 decimals?",
                    "{a} divided by {b} is what (2 decimals)?", "Please divide {a} by {b}, round to 2 decimals.",
                    "Could you divide {a} by {b}? Give 2 decimals.", "I need {a} / {b} rounded to 2 decimal places.",
                    "Find {a} divided by {b}, two decimals.", "How much is {a} / {b}? Round it to 2 decimals.",
                    "Split {a} into {b} equal parts: how big is each, to 2 decimals?",
                    "Give me {a} over {b}, rounded to two decimals.",
                    "Compute {a} / {b}, rounded to two decimal places."],
             "zh": ["{a}除以{b}等于多少？保留两位小数。", "请计算{a}÷{b}，保留2位小数。", "帮我算{a}除以{b}，保留两位小数。",
                    "{a}除以{b}得多少？结果保留两位小数。", "求{a}除以{b}的商（两位小数）。", "{a}被{b}除的结果是多少？保留两位小数。",
                    "把{a}平均分成{b}份，每份是多少？保留两位小数。", "我想知道{a}除以{b}的结果，保留2位小数。", "计算：{a}÷{b}（保留两位小数）。",
                    "能算一下{a}除以{b}吗？保留两位小数。", "{a}除{b}以后是多少？请保留两位小数。", "用{a}除以{b}，结果保留两位小数。",
                    "{a}除以{b}的结果（两位小数）是多少？"]},
            lambda r, s: (number(r, 10000, 999999, s), number(r, 11, 999, s)), "round({a} / {b}, 2)"),
    "percent": ({"en": ["What is {a}% of {b}?", "Find {a} percent of {b}.", "Calculate {a}% of {b}.",
                        "What is {a} percent of {b}?", "Take {a}% of {b}.", "Please compute {a} percent of {b}.",
                        "Could you work out {a}% of {b}?", "I need {a} percent of {b}.", "Find {a}% of {b} for me.",
                        "If I take {a}% of {b}, how much is that?", "Give me {a} percent of {b}.",
                        "What does {a}% of {b} come to?",
                        "How much is {a}% of {b}?"],
                 "zh": ["{b}的{a}%是多少？", "请计算{b}的百分之{a}。", "求{b}的{a}%。", "帮我算{b}的百分之{a}是多少。",
                        "{b}的百分之{a}等于多少？", "{b}的{a}%等于多少？",
                        "{b}的百分之{a}是多少？请计算。", "我想知道{b}的{a}%是多少。", "计算：{b}的{a}%。", "能算一下{b}的{a}%吗？", "{b}里的{a}%有多少？",
                        "取{b}的百分之{a}，结果是多少？",
                        "{b}乘以{a}%等于多少？"]},
                lambda r, s: (number(r, 2, 95, s), number(r, 1000, 99999, s)), "{b} * {a} / 100"),
    "cagr": ({"en": ["A population grew from {a} to {b} over 10 years. What is the compound annual growth rate "
                     "in percent?",
                     "Revenue went from {a} to {b} in 10 years. Compute the CAGR (%).",
                     "Sales rose from {a} to {b} over ten years. What is the CAGR in percent?",
                     "An investment grew from {a} to {b} in 10 years. Find its compound annual growth rate (%).",
                     "From {a} to {b} in 10 years: what compound annual growth rate (in %) is that?",
                     "Could you compute the CAGR (%) for growth from {a} to {b} over 10 years?",
                     "I need the compound annual growth rate, in percent, of a rise from {a} to {b} in ten years.",
                     "Profit climbed from {a} to {b} over 10 years. What is the annual compound growth in percent?",
                     "If something goes from {a} to {b} in 10 years, what is its CAGR (%)?",
                     "Over a decade a value rose from {a} to {b}. What was its CAGR in percent?"],
              "zh": ["人口在10年间从{a}增长到{b}，年均复合增长率是多少（%）？", "收入10年内从{a}增长到{b}，请计算复合年增长率（%）。", "销售额十年间从{a}增加到{b}，复合年增长率是多少（%）？",
                     "一笔投资10年从{a}涨到{b}，求复合年均增长率（%）。", "从{a}到{b}，10年的复合年均增长率是百分之几？",
                     "利润10年从{a}升到{b}，年均复合增长率是多少（%）？", "我想知道从{a}增长到{b}（10年）的复合年增长率（%）。",
                     "能算一下10年内从{a}到{b}的复合年均增长率（%）吗？", "如果10年里从{a}涨到{b}，复合年均增长率是百分之多少？",
                     "某数值十年间从{a}变为{b}，它的复合年均增长率是百分之多少？"]},
             lambda r, s: (number(r, 100000, 900000, s), number(r, 910000, 2000000, s)),
             "round((({b} / {a}) ** (1 / 10) - 1) * 100, 2)"),
}
# Counterfactual twins: a training template of one operation with its operator word swapped for
# another operation's ("请计算{a}与{b}的和。" -> "请计算{a}与{b}的差。"), so the operation is read from the
# operator word and not from the sentence frame. Traces of a 2026-11-30 nano model: held-out
# "{a}与{b}的差是多少？" was missed 11 times on three sets, 9 of them called with "+", the operation
# of the add template "{a}与{b}之和是多少？" that has the same frame. Each slot holds the same word
# for add, sub, mul and div; the first slot found in a template is swapped. Twins go in with the
# training templates; one that nearly equals a held-out template (difflib ratio >= 0.85, as
# "{a}与{b}之差是多少？") is left out, so the held-out phrasings stay new.
OPERATOR_WORDS = {
    "en": [("the sum {a} + {b}", "the difference {a} - {b}", "the product {a} x {b}", "the quotient {a} / {b}"),
           ("plus", "minus", "multiplied by", "divided by"), ("plus", "minus", "times", "divided by"),
           ("the sum of {a} and {b}", "the difference between {a} and {b}", "the product of {a} and {b}",
            "the quotient of {a} and {b}"),
           (" + ", " - ", " x ", " / ")],
    "zh": [("加上", "减去", "乘以", "除以"), ("之和", "之差", "之积", "之商"), ("的和", "的差", "的乘积", "的商"),
           ("的和", "的差", "的积", "的商"), ("相加", "相减", "相乘", "相除"), ("加", "减", "乘", "除以"),
           ("+", "-", "×", "÷")],
}
# Words that tie a sentence to one operation ("{a}减掉{b}还剩多少？"): such templates get no twin.
ONE_OPERATION_FRAMES = {"en": ("together", "total", " from ", "left", "remains"),
                        "zh": ("还剩", "总和", "起来", "从", "乘上", "掉")}
# The operations twins swap between, with the symbol their python call uses (DPO swaps that too).
OPERATOR_SYMBOLS = {"add": " + ", "sub": " - ", "mul": " * ", "div": " / "}
TWIN_OPS = tuple(OPERATOR_SYMBOLS)
ROUNDING = {"en": " Round to 2 decimals.", "zh": "保留两位小数。"}


def _operator_twins(op: str, lang: str) -> list[str]:
    heldout = [ARITH[o][0][lang][-1] for o in ARITH]
    twins = []
    sources = [(i, src) for i, src in enumerate(TWIN_OPS[:3]) if src != op]  # div's carry a rounding phrase
    for i, src in sources:
        for template in ARITH[src][0][lang][:-1]:
            slot = next((s for s in OPERATOR_WORDS[lang] if s[i] in template), None)
            if slot is None or any(w in template for w in ONE_OPERATION_FRAMES[lang]):
                continue
            twin = template.replace(slot[i], slot[TWIN_OPS.index(op)], 1)
            if any(s[i] in twin for s in OPERATOR_WORDS[lang]):
                continue  # a second word of the source operation is left ("相乘的积")
            twin += ROUNDING[lang] if op == "div" else ""
            near = max(difflib.SequenceMatcher(None, twin, h).ratio() for h in heldout)
            if near < 0.85 and twin not in ARITH[op][0][lang] and twin not in twins:
                twins.append(twin)
    return twins


@functools.cache
def operator_twins() -> tuple[dict, dict]:
    """(twins, templates): each operation's twins per language, made from the hand-written templates
    only, and its training templates with them. Built on first use, not at import (~80 ms of difflib)."""
    twins = {op: {lang: _operator_twins(op, lang) for lang in ("en", "zh")} for op in TWIN_OPS}
    templates = {op: {lang: written[:-1] + twins.get(op, {}).get(lang, []) + written[-1:]  # held-out stays last
                      for lang, written in ARITH[op][0].items()} for op in ARITH}
    return twins, templates

ARITH_ANSWER = {"en": "The result is {r}.", "zh": "计算结果是{r}。"}
CAGR_ANSWER = {"en": "The compound annual growth rate is {r}%.", "zh": "复合年均增长率约为{r}%。"}


def arithmetic(rng: random.Random, split: str, lang: str, twins: bool = True) -> Task:
    op = rng.choice(list(ARITH))
    written, operands, expr = ARITH[op]
    templates = operator_twins()[1][op] if twins else written
    a, b = operands(rng, split)
    code = f"print({expr.format(a=a, b=b)})"
    result = run_python(code)
    answer = (CAGR_ANSWER if op == "cagr" else ARITH_ANSWER)[lang].format(r=result)
    user = question(rng, templates[lang], split, lang, a=a, b=b)
    msgs = conversation(offered_tools(rng, [PYTHON_TOOL]), user,
                        [("assistant", "python", code), ("observation", "", result), ("assistant", "", answer)])
    return Task(f"arith-{op}", lang, split, msgs, result, [{"name": "python", "arguments": code}])


# ---- user functions ---------------------------------------------------------------------
def _date(rng: random.Random, split: str) -> str:
    """A date from 2020 on. The split is by week (held-out weeks by the operand rule), not by
    day: a day rule mod 7 would give held-out dates a weekday that training never shows."""
    day = 7 * number(rng, 0, 430, split) + rng.randrange(7)
    return (world.dt.date(2020, 1, 1) + world.dt.timedelta(days=day)).isoformat()


FUNCTION_TASKS = {
    "get_weather": ({"en": ["What's the weather in {city} on {date}?", "Weather forecast for {city}, {date}?",
                            "How will the weather be in {city} on {date}?", "Check the weather for {city} on {date}.",
                            "Is it going to be sunny in {city} on {date}?", "Tell me the forecast in {city} for {date}.",
                            "Could you check the weather in {city} for {date}?",
                            "I'm visiting {city} on {date}. What's the weather like?",
                            "Weather report: {city}, {date}.", "On {date}, what weather should I expect in {city}?",
                            "Do I need an umbrella in {city} on {date}?", "Give me the {date} forecast for {city}.",
                            "How hot will {city} be on {date}?",
                            "What will {date} look like in {city}, weather-wise?",
                            "Will it rain in {city} on {date}?"],
                     "zh": ["{city}{date}的天气怎么样？", "帮我查一下{date}{city}的天气预报。", "{date}{city}天气如何？",
                            "查询{city}{date}的天气。", "{city}在{date}是晴天吗？", "请告诉我{date}{city}的天气。",
                            "我{date}要去{city}，天气怎么样？", "{city}在{date}的天气预报是什么？", "能查一下{city}{date}的天气吗？",
                            "{date}去{city}需要带伞吗？", "查天气：{city}，{date}。", "{date}的{city}热不热？", "{city}{date}冷吗？",
                            "{date}{city}会下雨吗？"]},
                    lambda r, s, lang: {"city": r.choice(world.cities(s)).name(lang), "date": _date(r, s)},
                    {"en": "On {date} {city} will be {condition}, {low_c} to {high_c} °C.",
                     "zh": "{date}{city}的天气：{condition}，气温{low_c}到{high_c}摄氏度。"}),
    "convert_currency": ({"en": ["Convert {amount} {from_currency} to {to_currency}.",
                                 "How much is {amount} {from_currency} in {to_currency}?",
                                 "What is {amount} {from_currency} worth in {to_currency}?",
                                 "Change {amount} {from_currency} to {to_currency}.",
                                 "Please convert {amount} {from_currency} into {to_currency}.",
                                 "{amount} {from_currency} equals how many {to_currency}?",
                                 "Could you convert {amount} {from_currency} to {to_currency}?",
                                 "I have {amount} {from_currency}. How much {to_currency} is that?",
                                 "{amount} {from_currency} to {to_currency}, please.",
                                 "If I sell {amount} {from_currency}, how many {to_currency} do I get?",
                                 "Give me {amount} {from_currency} in {to_currency}.",
                                 "What's the {to_currency} value of {amount} {from_currency}?",
                                 "Exchange {amount} {from_currency} into {to_currency}."],
                          "zh": ["把{amount}{from_currency}换算成{to_currency}。", "{amount}{from_currency}等于多少{to_currency}？",
                                 "将{amount}{from_currency}兑换为{to_currency}。", "{amount}{from_currency}折合多少{to_currency}？",
                                 "请把{amount}{from_currency}换成{to_currency}。", "帮我算{amount}{from_currency}是多少{to_currency}。",
                                 "我有{amount}{from_currency}，相当于多少{to_currency}？",
                                 "能把{amount}{from_currency}换算成{to_currency}吗？",
                                 "{amount}{from_currency}兑{to_currency}是多少？",
                                 "计算{amount}{from_currency}的{to_currency}金额。",
                                 "{amount}{from_currency}值多少{to_currency}？",
                                 "用{amount}{from_currency}可以兑换多少{to_currency}？",
                                 "{amount}{from_currency}能换多少{to_currency}？"]},
                         lambda r, s, lang: dict(zip(("from_currency", "to_currency"),
                                                     r.sample(sorted(world.RATES_PER_USD), 2)),
                                                 amount=number(r, 10, 99999, s)),
                         {"en": "{amount} {from_currency} is {result} {to_currency}.",
                          "zh": "{amount}{from_currency}约合{result}{to_currency}。"}),
    "convert_units": ({"en": ["Convert {value} {from_unit} to {to_unit}.", "How many {to_unit} is {value} {from_unit}?",
                              "What is {value} {from_unit} in {to_unit}?", "Please change {value} {from_unit} into {to_unit}.",
                              "{value} {from_unit} equals how many {to_unit}?", "Turn {value} {from_unit} into {to_unit}.",
                              "Could you convert {value} {from_unit} to {to_unit}?",
                              "I have {value} {from_unit}. How many {to_unit} is that?",
                              "{value} {from_unit} to {to_unit}, please.",
                              "Give me {value} {from_unit} in {to_unit}.",
                              "What's {value} {from_unit} when measured in {to_unit}?",
                              "How much is {value} {from_unit} in {to_unit}?",
                              "Express {value} {from_unit} in {to_unit}."],
                       "zh": ["把{value}{from_unit}换算成{to_unit}。", "{value}{from_unit}等于多少{to_unit}？",
                              "将{value}{from_unit}转换为{to_unit}。", "{value}{from_unit}合多少{to_unit}？",
                              "请把{value}{from_unit}换成{to_unit}。", "帮我算{value}{from_unit}是多少{to_unit}。",
                              "我有{value}{from_unit}，相当于多少{to_unit}？", "能把{value}{from_unit}换算成{to_unit}吗？",
                              "{value}{from_unit}折合多少{to_unit}？", "计算{value}{from_unit}等于几{to_unit}。",
                              "{value}{from_unit}换成{to_unit}是多少？", "用{to_unit}表示{value}{from_unit}是多少？",
                              "{value}{from_unit}是多少{to_unit}？"]},
                      lambda r, s, lang: dict(zip(("from_unit", "to_unit"), r.choice(
                          [("km", "mile"), ("mile", "km"), ("m", "foot"), ("foot", "m"), ("kg", "pound"),
                           ("pound", "kg")])), value=number(r, 1, 9999, s)),
                      {"en": "{value} {from_unit} is {result} {to_unit}.", "zh": "{value}{from_unit}等于{result}{to_unit}。"}),
    "day_of_week": ({"en": ["What day of the week is {date}?", "Which weekday falls on {date}?", "What weekday is {date}?",
                            "Tell me which day of the week {date} falls on.", "On which day of the week is {date}?",
                            "Find the day of the week for {date}.",
                            "Could you tell me what day {date} is?",
                            "I have a meeting on {date}. Which day of the week is that?", "{date}: which weekday?",
                            "Is {date} a Monday, a Friday, or another day?",
                            "Give me the day of the week for {date}.", "What day will it be on {date}?",
                            "Tell me the weekday of {date}."],
                     "zh": ["{date}是星期几？", "请问{date}是周几？", "{date}是周几？", "查一下{date}是星期几。",
                            "{date}这天星期几？", "帮我看看{date}是星期几。",
                            "能告诉我{date}是星期几吗？", "我{date}有个会，那天星期几？", "{date}：星期几？", "{date}是礼拜几？", "请问{date}对应星期几？",
                            "{date}会是星期几？",
                            "{date}那天是星期几？"]},
                    lambda r, s, lang: {"date": _date(r, s)},
                    {"en": "{date} is a {weekday}.", "zh": "{date}是{weekday}。"}),
}


def function_call(rng: random.Random, split: str, lang: str) -> Task:
    name = rng.choice(list(FUNCTION_TASKS))
    templates, make_args, answer_t = FUNCTION_TASKS[name]
    args = make_args(rng, split, lang)
    args = {k: args[k] for k in world.FUNCTION_SCHEMAS[name]["parameters"]["properties"]}  # schema order
    result = world.FUNCTIONS[name](**args)
    obs = json.dumps(result, ensure_ascii=False)
    user = question(rng, templates[lang], split, lang, **args)
    answer = answer_t[lang].format(**result)
    msgs = conversation(offered_tools(rng, [world.function_tool(name)]), user,
                        [("assistant", name, json.dumps(args, ensure_ascii=False)), ("observation", "", obs),
                         ("assistant", "", answer)])
    key = {"get_weather": "condition", "convert_currency": "result", "convert_units": "result",
           "day_of_week": "weekday"}[name]
    return Task(f"function-{name}", lang, split, msgs, str(result[key]), [{"name": name, "arguments": args}])


# ---- plain turns and refusals -------------------------------------------------------------
CHAT = {"en": [("Hello!", "Hello! How can I help you today?"),
               ("Who are you?", "I am ChatGLM, an AI assistant. I can answer questions and use tools."),
               ("Thank you!", "You're welcome! Let me know if there is anything else."),
               ("Hi there.", "Hi! What can I do for you?"), ("How are you?", "I'm doing well, thanks! How can I help?"),
               ("What can you do?", "I can answer questions, run Python, search the web and call the functions you give me."),
               ("What's your name?", "My name is ChatGLM."), ("Goodbye!", "Goodbye! Have a nice day."),
               ("Nice to meet you.", "Nice to meet you too! How can I help?"), ("Good night.", "Good night! Sleep well."),
               ("Thanks, that's all.", "You're welcome! Have a great day."),
               ("Can you help me?", "Of course! What do you need?"),
               ("Good morning.", "Good morning! What can I do for you?")],
        "zh": [("你好", "你好！有什么可以帮你的吗？"), ("你是谁？", "我是 ChatGLM，一个人工智能助手，可以回答问题并使用工具。"),
               ("谢谢你！", "不客气！还有其他需要帮忙的吗？"), ("嗨。", "嗨！我能为你做些什么？"),
               ("你好吗？", "我很好，谢谢！有什么需要帮忙的吗？"), ("你能做什么？", "我可以回答问题、运行 Python、搜索网页，还能调用你提供的函数。"),
               ("你叫什么名字？", "我叫 ChatGLM。"), ("再见！", "再见！祝你愉快。"), ("很高兴认识你。", "我也很高兴认识你！有什么可以帮你的？"),
               ("晚安。", "晚安！好梦。"), ("好的，就这些，谢谢。", "不客气！祝你一天愉快。"), ("你能帮帮我吗？", "当然可以！你需要什么？"),
               ("早上好。", "早上好！今天想做些什么？")]}
UNSUPPORTED = {"en": [("Book a flight to {city} for me.", "booking flights"),
                      ("Order a taxi to the {city} airport.", "ordering taxis"),
                      ("Send an email to my boss in {city}.", "sending emails"),
                      ("Play some music from {city}.", "playing music"), ("Set an alarm for my trip to {city}.", "setting alarms"),
                      ("Call my friend in {city}.", "making phone calls"), ("Buy me a train ticket to {city}.", "buying tickets"),
                      ("Order a pizza to my hotel in {city}.", "ordering food"),
                      ("Turn on the lights in my {city} apartment.", "controlling devices"),
                      ("Send a text message to my sister in {city}.", "sending messages"),
                      ("Pay my electricity bill for the {city} office.", "paying bills"),
                      ("Rent a car for me in {city}.", "renting cars"),
                      ("Reserve a hotel room in {city}.", "reserving hotels")],
               "zh": [("帮我订一张去{city}的机票。", "订机票"), ("帮我叫一辆去{city}机场的出租车。", "叫出租车"),
                      ("给我在{city}的老板发一封邮件。", "发送邮件"), ("播放一首{city}的音乐。", "播放音乐"),
                      ("为我去{city}的行程设一个闹钟。", "设置闹钟"), ("给我在{city}的朋友打个电话。", "打电话"),
                      ("帮我买一张去{city}的火车票。", "买票"), ("帮我点一份披萨送到{city}的酒店。", "点外卖"),
                      ("打开我在{city}公寓里的灯。", "控制设备"), ("给我在{city}的妹妹发条短信。", "发送短信"),
                      ("帮我交{city}办公室的电费。", "缴费"), ("帮我在{city}租一辆车。", "租车"),
                      ("帮我预订{city}的酒店房间。", "预订酒店")]}
REFUSAL = {"en": "Sorry, I can't help with {what}: none of my tools can do that.",
           "zh": "抱歉，我无法帮你{what}，我目前的工具做不到。"}


def plain_chat(rng: random.Random, split: str, lang: str) -> Task:
    user, reply = pick_template(rng, CHAT[lang], split)
    tools = offered_tools(rng, []) if rng.random() < 0.5 else None
    return Task("plain-chat", lang, split, conversation(tools, user, [("assistant", "", reply)]))


def refusal(rng: random.Random, split: str, lang: str) -> Task:
    template, what = pick_template(rng, UNSUPPORTED[lang], split)
    user = template.format(city=rng.choice(world.cities(split)).name(lang))
    reply = REFUSAL[lang].format(what=what)
    return Task("refusal", lang, split, conversation(offered_tools(rng, [], min_extra=1), user, [("assistant", "", reply)]))


# ---- information seeking with simple_browser (and a two-step search-then-compute) ---------
_browsers: dict = {}


def browser(split: str):
    """The agent's real BrowserTool (its observations are exactly what the model sees at run
    time) over the split's documents; page ids restart for every task."""
    if split not in _browsers:
        # imported here: data sits below agent in the pipeline, only this generator needs a tool
        from openglm.agent.tools import BrowserTool, LocalSearch

        folder = world.DOCS_DIR if split == "heldout" else world.write_documents(tempfile.mkdtemp(), split)
        _browsers[split] = BrowserTool(LocalSearch(folder), results=BROWSER_RESULTS)
    tool = _browsers[split]
    tool.pages = {}
    return tool


FACT = {"en": ["What was the population of {city} in {year}?", "How many people lived in {city} in {year}?",
               "What population did {city} have in {year}?", "Tell me the population of {city} in {year}.",
               "How large was the population of {city} in {year}?", "Search for the {year} population of {city}.",
               "Look up the {year} census population of {city}.", "How many residents did {city} have in {year}?",
               "Could you look up how many people {city} had in {year}?",
               "I need the population of {city} for {year}.", "{city}, {year}: what was the population?",
               "In {year}, how many people lived in {city}?", "Give me {city}'s population in {year}.",
               "What was the headcount of {city} in {year}?",
               "Find how many residents {city} had in {year}."],
        "zh": ["{city}{year}年的人口是多少？", "{year}年{city}有多少人口？", "{city}在{year}年有多少人？",
               "请查一下{year}年{city}的人口。", "{year}年{city}的人口有多少？", "搜索{city}{year}年的人口数。", "查一下{city}{year}年人口普查的人数。",
               "能查一下{city}在{year}年的人口吗？", "我想知道{year}年{city}有多少人。", "{city}，{year}年，人口多少？", "{year}年的时候{city}住着多少人？",
               "告诉我{city}{year}年的人口数量。", "{city}{year}年总人口是多少？",
               "{city}在{year}年有多少常住人口？"]}
FACT_ANSWER = {"en": "According to 【{i}†{title}】, {city} had {pop} residents in {year}.",
               "zh": "根据【{i}†{title}】，{city}{year}年的人口为{pop}人。"}
GROWTH = {"en": ["What was the compound annual growth rate of {city}'s population between 2010 and 2020?",
                 "Compute the CAGR of {city}'s population from 2010 to 2020.",
                 "How fast did {city}'s population grow per year (CAGR) from 2010 to 2020?",
                 "Find the compound annual growth rate of the population of {city}, 2010 to 2020.",
                 "What was the CAGR of the population of {city} between 2010 and 2020?",
                 "Could you find the CAGR of {city}'s population over 2010-2020?",
                 "I need the compound annual growth rate of the population of {city} from 2010 to 2020.",
                 "{city}: what was the population CAGR from 2010 to 2020?",
                 "Between 2010 and 2020, at what compound annual rate did the population of {city} grow?",
                 "By what percentage per year (CAGR) did {city}'s population change from 2010 to 2020?"],
          "zh": ["{city}2010年到2020年人口的复合年均增长率是多少？", "计算{city}人口从2010年到2020年的年均复合增长率。",
                 "{city}人口2010至2020年的年均复合增长率是多少？", "求{city}2010年到2020年人口的复合增长率。",
                 "请算出{city}从2010年到2020年人口的年均复合增长率。",
                 "能算一下{city}2010到2020年人口的复合年均增长率吗？", "我想知道{city}人口2010-2020年的年均复合增长率。",
                 "{city}：2010年至2020年人口复合年均增长率是多少？", "2010年到2020年，{city}的人口每年复合增长多少？",
                 "{city}人口在2010至2020年间每年平均增长百分之多少（复合增长率）？"]}
GROWTH_ANSWER = {"en": "{city}'s population went from {p2010} to {p2020}, a compound annual growth rate of {r}% "
                       "【{i}†{title}】.",
                 "zh": "根据【{i}†{title}】，{city}人口从{p2010}变为{p2020}，复合年均增长率约为{r}%。"}


def _search_and_open(rng: random.Random, split: str, lang: str):
    """The search -> mclick turns for one city's population page: (city, turns, page id, title)."""
    city = rng.choice(world.cities(split))
    name = city.name(lang)
    query = f"{name} population" if lang == "en" else f"{name}人口"
    tool = browser(split)
    found = tool.search(query)
    title = query  # the population page's title is exactly the query
    page = next(i for i, p in tool.pages.items() if p.title == title)
    opened = tool.mclick([page])
    search_call = f'search("{query}")'
    turns = [("assistant", "simple_browser", search_call), ("observation", found.metadata, found.content),
             ("assistant", "simple_browser", f"mclick([{page}])"), ("observation", opened.metadata, opened.content)]
    calls = [{"name": "simple_browser", "arguments": {"function": "search", "args": [query], "kwargs": {}}},
             {"name": "simple_browser", "arguments": {"function": "mclick", "args": [[page]], "kwargs": {}}}]
    return city, turns, calls, page, title


def fact_lookup(rng: random.Random, split: str, lang: str) -> Task:
    city, turns, calls, page, title = _search_and_open(rng, split, lang)
    year = rng.choice([2010, 2020])
    pop = city.pop2010 if year == 2010 else city.pop2020
    user = question(rng, FACT[lang], split, lang, city=city.name(lang), year=year)
    answer = FACT_ANSWER[lang].format(i=page, title=title, city=city.name(lang), pop=pop, year=year)
    msgs = conversation(offered_tools(rng, [BROWSER_TOOL]), user, turns + [("assistant", "", answer)])
    return Task("browser-fact", lang, split, msgs, str(pop), calls)


def search_then_compute(rng: random.Random, split: str, lang: str) -> Task:
    city, turns, calls, page, title = _search_and_open(rng, split, lang)
    code = f"print(round((({city.pop2020} / {city.pop2010}) ** (1 / 10) - 1) * 100, 2))"
    result = run_python(code)
    user = question(rng, GROWTH[lang], split, lang, city=city.name(lang))
    answer = GROWTH_ANSWER[lang].format(city=city.name(lang), p2010=city.pop2010, p2020=city.pop2020, r=result,
                                        i=page, title=title)
    turns += [("assistant", "python", code), ("observation", "", result), ("assistant", "", answer)]
    msgs = conversation(offered_tools(rng, [BROWSER_TOOL, PYTHON_TOOL]), user, turns)
    return Task("browser-cagr", lang, split, msgs, result, calls + [{"name": "python", "arguments": code}])
