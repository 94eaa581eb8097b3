"""The speedrun's two choices, named apart: the model preset (architecture) and the run budget (cost)."""

import json
from dataclasses import asdict

import pytest

from openglm.speedrun import BUDGETS, PRESETS, Budget, Speedrun


def test_a_run_records_the_budget_it_was_given(tmp_path):
    run = Speedrun(tmp_path, budget="smoke")
    assert (run.model, run.budget_name, run.budget) == ("nano", "smoke", BUDGETS["smoke"])
    run.record_settings()
    saved = json.loads((tmp_path / "speedrun.json").read_text())
    assert (saved["model"], saved["budget_name"], saved["budget"]) == ("nano", "smoke", asdict(BUDGETS["smoke"]))


def test_the_former_call_still_works_and_finds_the_budget_name(tmp_path):
    # Speedrun(out, preset=..., budget=...): `preset` was the model preset
    run = Speedrun(tmp_path, preset="micro", seed=0, budget=PRESETS["tiny"])
    assert (run.model, run.budget_name) == ("micro", "smoke")
    assert Speedrun(tmp_path, budget="tiny").budget_name == "smoke"  # a former budget name
    assert Speedrun(tmp_path, budget=Budget(pretrain_steps=1)).budget_name == "custom"
    assert "nano" not in BUDGETS  # "nano" names the model preset only


def test_overrides_keep_the_budget_name_and_show_what_changed(tmp_path):
    budget = BUDGETS["smoke"].with_overrides({"pretrain_steps": 7})
    run = Speedrun(tmp_path, budget=budget, budget_name="smoke")
    assert run.budget_changes() == {"pretrain_steps": 7}
    with pytest.raises(ValueError, match="unknown speedrun budget 'huge'; choose one of full, smoke"):
        Speedrun(tmp_path, budget="huge")
    with pytest.raises(ValueError, match="unknown speedrun budget 'huge'"):
        Speedrun(tmp_path, budget=budget, budget_name="huge")


def test_a_run_written_before_the_split_resumes(tmp_path):
    legacy = {"preset": "nano", "seed": 0, "budget": asdict(BUDGETS["smoke"])}
    (tmp_path / "speedrun.json").write_text(json.dumps(legacy))
    Speedrun(tmp_path, seed=0, budget="smoke").record_settings()
    assert json.loads((tmp_path / "speedrun.json").read_text())["budget_name"] == "smoke"
    with pytest.raises(ValueError, match=r"other settings \(pretrain_steps, model\)"):
        Speedrun(tmp_path, model="micro", budget=BUDGETS["smoke"].with_overrides({"pretrain_steps": 5}),
                 budget_name="smoke").record_settings()
