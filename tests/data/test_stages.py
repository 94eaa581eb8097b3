import pytest

from openglm.data.records import make_row
from openglm.data.stages.langid import Langid
from openglm.data.stages.normalize import Normalize
from openglm.data.stages.pii import Pii, valid_cn_id
from openglm.data.stages.quality import DEFAULT_RULES, Quality, check
from openglm.data.stages.safety import Safety


def row(text, lang=""):
    return make_row(0, "t", "s", text, lang)


def test_normalize_keeps_chinese_punctuation_but_folds_fullwidth_alphanumerics():
    r = row("１９９８年，ＧＬＭ说：“你好！”\r\n\r\n\r\n\r\nline  \u200bend\u3000x\x00")
    assert Normalize()(r) is None
    assert r["text"] == "1998年，GLM说：“你好！”\n\nline  end x"  # inner runs stay (code indentation)
    assert set(r["_edits"].split()) == {"normalize/unicode", "normalize/whitespace"}


def test_normalize_keeps_code_indentation_and_converts_traditional_on_request():
    code = row("def f():\n        return  1   \n")
    Normalize()(code)
    assert code["text"] == "def f():\n        return  1"
    trad = row("這是電腦軟體的說明。")
    Normalize(t2s=True)(trad)
    assert trad["text"] == "这是电脑软体的说明。" and "normalize/t2s" in trad["_edits"]
    simplified = row("这是说明。")
    Normalize(t2s=True)(simplified)
    assert "t2s" not in simplified["_edits"]


def test_langid_uses_the_packaged_model_and_respects_given_languages():
    stage = Langid(keep=["zh", "en"])
    zh, en, fr = row("今天北京天气很好，我们去公园散步吧。"), row("The weather in London is lovely today."), \
        row("Le chat est sur la table et il dort tranquillement.")
    assert stage(zh) is None and zh["lang"] == "zh"
    assert stage(en) is None and en["lang"] == "en"
    assert stage(fr) == ("unwanted_lang", "fr")
    code = row("import os\nprint(os.getcwd())", lang="code")
    assert Langid(keep=["code"])(code) is None and code["lang"] == "code"


ENGLISH = ("The pipeline reads documents from many sources, cleans them, removes duplicates and writes "
           "token shards that training can memory map. Each stage counts what it keeps and what it rejects, "
           "so a user can see why the output is smaller than the input. Chinese text has no spaces between "
           "words, which is why its rules look at characters rather than words.")


@pytest.mark.parametrize("text,lang,reason", [
    ("too short", "en", "too_short"),
    ("x" * 1_000_001, "en", "too_long"),
    ("buy now\n" * 60, "en", "repeated_lines"),
    ("§ ¤ ® © ™ ° ± " * 40, "en", "symbols"),
    ("1234 5678 9012 3456 " * 30, "en", "few_alpha_words"),
    ("the cat sat on the mat " + "spam eggs " * 80, "en", "repeated_ngrams"),
    ("这是一个测试" + "abcdefghij klmnopqrst " * 20, "zh", "few_han_chars"),
    ("我们今天去北京。" + "好好学习天天向上" * 30, "zh", "repeated_ngrams"),
    ("x = 1\n" + "y" * 1500 + "\n" + "print(x)\n" * 3, "code", "long_lines"),
])
def test_quality_rules_each_reject_their_case(text, lang, reason):
    assert Quality()(row(text, lang)) == reason


def test_quality_keeps_real_text_and_overrides_rules():
    from openglm.data.corpus import load_sample

    zh = next(d for d in load_sample("heldout", lang="zh") if 500 < len(d["text"]) < 3000)
    assert check(zh["text"], DEFAULT_RULES["zh"]) is None
    assert check(ENGLISH, DEFAULT_RULES["en"]) is None
    assert Quality(rules={"en": {"min_chars": 10_000}})(row(ENGLISH, "en")) == "too_short"
    with pytest.raises(ValueError, match="unknown rule"):
        Quality(rules={"en": {"min_charz": 1}})


def test_safety_needs_several_hits_and_reads_extra_lists(tmp_path):
    stage = Safety()
    assert stage(row("新闻报道：警方查处色情场所。")) is None  # one mention is news
    assert stage(row("最新色情视频，网络赌场注册送彩金"))[0] == "unsafe_words"
    assert stage(row("Pornography and an online casino bonus here"))[0] == "unsafe_words"
    assert stage(row("The casino was built in 1920; a bonus round followed.")) is None
    lst = tmp_path / "words.txt"
    lst.write_text("frobnicate\n")
    assert Safety(builtin=False, wordlists=[str(lst)], min_hits=1)(row("we frobnicate")) == \
        ("unsafe_words", "frobnicate")


def test_pii_scrubs_emails_phones_and_valid_chinese_ids_only():
    assert valid_cn_id("11010519491231002X") and not valid_cn_id("110105194912310021")
    r = row("联系张三 zhang.san@example.com.cn 或 13812345678，+86 139 1234 5678，"
            "身份证11010519491231002X，订单号110105194912310021；call (415) 555-0132. Version 3.11.7, 2024-01-05.")
    assert Pii()(r) is None
    assert r["text"] == ("联系张三 [EMAIL] 或 [PHONE]，[PHONE]，身份证[ID]，订单号110105194912310021；"
                         "call [PHONE]. Version 3.11.7, 2024-01-05.")
    assert set(r["_edits"].split()) == {"pii/email", "pii/phone", "pii/id_number"}
