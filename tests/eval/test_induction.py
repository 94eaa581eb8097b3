"""The in-context copying probe: its rows, an exact copier scores ~1, an untrained model chance."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from openglm import GLM, GLMConfig, save_model
from openglm.cli import app
from openglm.eval.induction import IGNORE, induction_batch, induction_score, token_range


def test_each_row_repeats_one_span_and_scores_only_inside_the_copy():
    ids, targets = induction_batch(rows=40, seq_len=64, low=10, high=5000, seed=3)
    assert ids.shape == targets.shape == (40, 64) and int(ids.min()) >= 10 and int(ids.max()) < 5000
    for row, tgt in zip(ids.tolist(), targets.tolist()):
        scored = [i for i, t in enumerate(tgt) if t != IGNORE]
        start, end = scored[0], scored[-1] + 2  # the copy: its first token up to its last
        n = end - start
        assert 4 <= n <= 16 and scored == list(range(start, end - 1))
        assert [tgt[i] for i in scored] == row[start + 1:end]
        origin = [s for s in range(start - n + 1) if row[s:s + n] == row[start:end]]
        assert origin, "the copied span appears earlier in the row"
    again, _ = induction_batch(rows=40, seq_len=64, low=10, high=5000, seed=3)
    other, _ = induction_batch(rows=40, seq_len=64, low=10, high=5000, seed=4)
    assert torch.equal(ids, again) and not torch.equal(ids, other)


class ExactCopier(torch.nn.Module):
    """Induction done by hand: predict what followed the latest earlier occurrence of this token."""

    def __init__(self, vocab: int):
        super().__init__()
        self.config = GLMConfig.from_preset("nano", vocab_size=vocab)

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, self.config.vocab_size)
        for b, row in enumerate(ids.tolist()):
            for t, tok in enumerate(row):
                prev = [s for s in range(t) if row[s] == tok]
                if prev:
                    logits[b, t, row[prev[-1] + 1]] = 10.0
        return logits


def test_an_exact_copier_scores_near_one_and_an_untrained_glm_scores_chance():
    copier = induction_score(ExactCopier(4096), rows=16, seq_len=64)
    assert copier.accuracy > 0.95 and copier.loss < 0.5
    torch.manual_seed(0)
    model = GLM(GLMConfig.from_depth(4, vocab_size=4096)).eval()
    untrained = induction_score(model, rows=16, seq_len=64)
    low, high = token_range(model.config)
    assert high == model.config.pad_token_id and untrained.chance_loss == pytest.approx(math.log(high - low))
    assert untrained.accuracy < 0.02 and abs(untrained.loss - untrained.chance_loss) < 1.0
    assert untrained.targets == copier.targets > 16 * 3


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="rows"):
        induction_batch(rows=0, seq_len=64, low=0, high=100)
    with pytest.raises(ValueError, match="too short"):
        induction_batch(rows=2, seq_len=20, low=0, high=100)
    with pytest.raises(ValueError, match="two token ids"):
        induction_batch(rows=2, seq_len=64, low=5, high=6)


def test_cli_prints_one_json_score_for_a_checkpoint_without_tokenizer(tmp_path):
    torch.manual_seed(0)
    save_model(GLM(GLMConfig.from_depth(4, vocab_size=2048)), tmp_path, layout="hf")  # ids only: no tokenizer
    result = CliRunner().invoke(app, ["eval", "induction", "--model", str(tmp_path), "--rows", "8", "--json"])
    assert result.exit_code == 0, result.output
    score = json.loads(result.output.strip().splitlines()[-1])
    assert score["targets"] > 8 and 0 <= score["accuracy"] < 0.05
