"""Every GLM-4 protocol string in one place.

The texts below reproduce the official glm-4-9b-chat chat template
(``openglm/assets/glm-4-9b-chat.chat_template.jinja``) character for character;
``render`` assembles them, and the tests check the result against the template
itself.  Edit a string here only together with that template.
"""

from __future__ import annotations

from importlib import resources

# Special tokens, in vocabulary order: id = GLM4_BASE_VOCAB + index.
# The order is part of the checkpoint format, never reorder it.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
)

# Number of BPE ranks in the glm-4-9b-chat tiktoken file; specials follow them.
GLM4_BASE_VOCAB = 151329

# Generation must stop on all three: a turn has no end token, the model ends it by
# starting the next role.  Forgetting the last two is the classic "never stops" bug.
STOP_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|user|>", "<|observation|>")

# Every prompt starts with these two control tokens.
PROMPT_PREFIX = "[gMASK]<sop>"
PROMPT_PREFIX_TOKENS: tuple[str, ...] = ("[gMASK]", "<sop>")

ROLES: tuple[str, ...] = ("system", "user", "assistant", "observation")


def role_token(role: str) -> str:
    """The control token that opens a message of ``role``, e.g. ``<|user|>``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return f"<|{role}|>"


def special_token_ids(base_vocab: int = GLM4_BASE_VOCAB) -> dict[str, int]:
    """Map each special token to its id (``base_vocab + index``)."""
    return {tok: base_vocab + i for i, tok in enumerate(SPECIAL_TOKENS)}


def pad_and_stop_ids(vocab_size: int = GLM4_BASE_VOCAB + len(SPECIAL_TOKENS)) -> dict:
    """``pad_token_id`` and ``eos_token_ids`` of a vocabulary that ends with the specials, as a model config
    names them (glm-4-9b-chat: 151329 and [151329, 151336, 151338])."""
    ids = special_token_ids(vocab_size - len(SPECIAL_TOKENS))
    return {"pad_token_id": ids["<|endoftext|>"], "eos_token_ids": [ids[t] for t in STOP_TOKENS]}


# ---- the system block the template emits for a message that carries ``tools`` ----

DEFAULT_SYSTEM_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)

# Follows DEFAULT_SYSTEM_PROMPT; each tool then adds "\n\n## {name}\n\n{description}".
TOOLS_HEADER = "\n\n# 可用工具"

# Appended (after a newline) to each user function's indented JSON schema.
FUNCTION_CALL_SUFFIX = "在调用上述函数时，请使用 Json 格式表示调用的参数。"

# The official demo puts this line (strftime format) into its system prompt; the
# template itself does not use it.
DATE_LINE_FORMAT = "当前日期: %Y-%m-%d"

PYTHON_TOOL_DESCRIPTION = (
    "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n"
    "`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n"
    "`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。"
    "不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。"
)

# NOTE the leading space on the " 如果用户提供了 URL" line is in the official text.
SIMPLE_BROWSER_TOOL_DESCRIPTION = (
    "你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
    "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，"
    "可以使用 `recency_days` 参数控制搜索内容的时效性。\n"
    "`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。"
    "选择多个角度的页面，同时尽可能选择可信任的信息来源。"
    "考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
    "`open_url(url: str)`：打开指定的 URL。\n"
    "\n"
    "使用 `【{引用 id}†{引用文本}】` 来引用内容。\n"
    "\n"
    "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; "
    "3. 根据获得的内容进行回复。在回复中应当引用信息来源。\n"
    " 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n"
    "如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。"
)

COGVIEW_TOOL_DESCRIPTION = (
    "如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。"
    "你需要向 `cogview` 发送图像描述，规则：\n"
    "- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n"
    "- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n"
    "- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n"
    "- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。"
)

# Built-in tools: the tool ``type`` is also the name the model puts in metadata.
BUILTIN_TOOL_DESCRIPTIONS: dict[str, str] = {
    "python": PYTHON_TOOL_DESCRIPTION,
    "simple_browser": SIMPLE_BROWSER_TOOL_DESCRIPTION,
    "cogview": COGVIEW_TOOL_DESCRIPTION,
}
BUILTIN_TOOLS: tuple[str, ...] = tuple(BUILTIN_TOOL_DESCRIPTIONS)

FREE_TEXT_TOOLS = ("python", "cogview")  # builtins whose call body is plain text: code, an image prompt

# Functions the simple_browser tool accepts, with their parameters in order.
BROWSER_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "search": ("query", "recency_days"),
    "mclick": ("ids",),
    "open_url": ("url",),
}

CHAT_TEMPLATE_FILE = "glm-4-9b-chat.chat_template.jinja"


def load_chat_template() -> str:
    """Text of the official Jinja chat template shipped in ``openglm/assets``.

    Useful for writing a ``tokenizer_config.json``; ``render`` does not need it.
    """
    return (resources.files("openglm") / "assets" / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
