"""Run report: JSON (everything), Markdown (the per-stage table) and a PNG of documents and tokens
kept after each stage, per language."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "png": out_dir / "report.png"}
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False))
    paths["md"].write_text(markdown(report), encoding="utf-8")
    plot(report, paths["png"])
    return paths


def _fmt_counts(counts: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def markdown(report: dict) -> str:
    lines = [f"# Data run `{report['recipe']}` ({report['engine']} engine)", ""]
    if report.get("damaged"):
        verdict = "**The run failed**: docs/ and tokens/ were removed (rerun with `--allow-damaged` to keep " \
            "what was read)." if report.get("failed") else "Allowed (`--allow-damaged`): what was read is kept."
        lines += ["Damaged input files (their readable records are counted; the damage is one `damaged_file` "
                  "reject each):", ""] + [f"- {d}" for d in report["damaged"]] + ["", verdict, ""]
    lines += ["| stage | input | kept | rejected | reasons | edits | tokens kept |",
             "|---|---:|---:|---:|---|---|---:|"]
    for s in report["stages"]:
        lines.append(f"| {s['stage']} | {s['input']:,} | {s['kept']:,} | {s['rejected']:,} | "
                     f"{_fmt_counts(s['reasons'])} | {_fmt_counts(s['edits'])} | "
                     f"{sum(s['tokens_by_lang'].values()):,} |")
    last = report["stages"][-1]
    lines += ["", "Kept after the last stage, by language:", "",
              "| language | documents | tokens |", "|---|---:|---:|"]
    for lang, docs in last["docs_by_lang"].items():
        lines.append(f"| {lang} | {docs:,} | {last['tokens_by_lang'].get(lang, 0):,} |")
    for name, summary in report.get("decisions", {}).items():
        lines += ["", f"**{name}**: `{json.dumps(summary, ensure_ascii=False)}`"]
    pack = report.get("pack")
    if pack:
        lines += ["", f"Packed {pack['n_tokens']:,} tokens from {pack['n_docs']:,} documents "
                  f"({pack['epochs']} epoch(s)) into {pack['n_shards']} shard(s) in `{pack['dir']}`.", "",
                  "| source | documents | tokens | share |", "|---|---:|---:|---:|"]
        total = max(pack["n_tokens"], 1)
        for src, tokens in sorted(pack["tokens_by_source"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {src} | {pack['docs_by_source'][src]:,} | {tokens:,} | {tokens / total:.1%} |")
    lines += ["", "Seconds: " + ", ".join(f"{k} {v}" for k, v in report.get("seconds", {}).items()), ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stages = list(report["stages"])
    if report.get("pack"):  # what training will see: mixing repeats included
        stages.append({"stage": "packed", "docs_by_lang": report["pack"]["docs_by_lang"],
                       "tokens_by_lang": report["pack"]["tokens_by_lang"]})
    names = [s["stage"] for s in stages]
    langs = sorted({lang for s in stages for lang in s["docs_by_lang"]})
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names)) * 2, 4.5))
    for ax, key, title in ((axes[0], "docs_by_lang", "documents kept"), (axes[1], "tokens_by_lang", "tokens kept")):
        bottom = np.zeros(len(names))
        for lang in langs:
            values = np.array([s[key].get(lang, 0) for s in stages], dtype=float)
            ax.bar(names, values, bottom=bottom, label=lang)
            bottom += values
        ax.set_title(f"{title} after each stage")
        ax.tick_params(axis="x", rotation=35)
        if langs:  # nothing kept: no legend (and no matplotlib warning)
            ax.legend(title="language", fontsize=8)
    fig.suptitle(f"{report['recipe']} ({report['engine']} engine)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
