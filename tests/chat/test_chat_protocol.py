"""Protocol constants against the glm-4-9b-chat tokenizer facts."""

import subprocess
import sys
from pathlib import Path

import openglm
from openglm.chat import PROMPT_PREFIX, SPECIAL_TOKENS, STOP_TOKENS
from openglm.chat.protocol import load_chat_template, special_token_ids


def test_special_token_ids_match_the_glm4_tokenizer():
    ids = special_token_ids()
    assert len(SPECIAL_TOKENS) == 14
    assert ids["<|endoftext|>"] == 151329
    assert (ids["[gMASK]"], ids["<sop>"]) == (151331, 151333)
    assert (ids["<|system|>"], ids["<|user|>"], ids["<|assistant|>"], ids["<|observation|>"]) == (
        151335,
        151336,
        151337,
        151338,
    )
    assert ids["<|end_of_video|>"] == 151342


def test_stop_tokens_are_the_three_eos_ids():
    ids = special_token_ids()
    assert sorted(ids[t] for t in STOP_TOKENS) == [151329, 151336, 151338]


def test_prompt_prefix():
    assert PROMPT_PREFIX == "[gMASK]<sop>"


def test_bundled_template_is_readable_from_the_package():
    path = Path(openglm.__file__).parent / "assets" / "glm-4-9b-chat.chat_template.jinja"
    assert load_chat_template() == path.read_text(encoding="utf-8")


def test_chat_package_does_not_import_torch():
    code = "import sys, openglm.chat; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pad_and_stop_ids_come_from_the_protocol_and_match_the_tokenizers():
    from openglm.chat.protocol import pad_and_stop_ids
    from openglm.model import GLMConfig
    from openglm.tokenizer import default_tokenizer

    assert pad_and_stop_ids() == {"pad_token_id": 151329, "eos_token_ids": [151329, 151336, 151338]}
    tok = default_tokenizer()
    ids = pad_and_stop_ids(16384)
    assert ids["pad_token_id"] == tok.pad_id and sorted(ids["eos_token_ids"]) == sorted(tok.stop_ids)
    nano = GLMConfig.from_preset("nano")
    assert (nano.pad_token_id, nano.eos_token_ids) == (ids["pad_token_id"], ids["eos_token_ids"])
