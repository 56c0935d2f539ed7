"""Recipes: every shipped one parses; a bad one fails with one error naming each problem,
before any compute."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from model.training.recipe import (
    Recipe,
    RecipeError,
    check_data,
    load_recipe,
    recipe_from_dict,
    shipped_recipes,
)

TINY = Path(__file__).resolve().parents[3] / "model" / "training" / "recipes" / "tiny.yaml"


def tiny_dict() -> dict[str, Any]:
    return yaml.safe_load(TINY.read_text())


def test_shipped_recipes_parse() -> None:
    names = {p.stem for p in shipped_recipes()}
    assert {"tiny", "default", "base"} <= names
    for path in shipped_recipes():
        recipe = load_recipe(path)
        assert isinstance(recipe, Recipe)
        assert recipe.model.d_model % recipe.model.n_heads == 0


def test_default_recipe_shape() -> None:
    r = load_recipe("default")
    assert (r.model.d_model, r.model.n_encoder_layers, r.model.n_decoder_layers) == (256, 3, 3)
    assert (r.model.n_heads, r.model.d_ff, r.tokenizer.vocab_size) == (4, 1024, 8000)
    assert r.max_source_len == r.max_target_len == 128


def test_roundtrip_through_dict() -> None:
    r = load_recipe("tiny")
    assert recipe_from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict()))) == r


def test_all_problems_reported_at_once() -> None:
    data = tiny_dict()
    data["model"]["d_modle"] = 64  # typo: unknown key
    data["pretrain"]["lr"] = "fast"  # wrong type
    data["finetune"]["max_steps"] = 2.5  # float for int
    data["finetune"]["mixture"]["poetry"] = 1.0  # unknown task
    data["bogus"] = True
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(data)
    text = str(err.value)
    for key in ("model.d_modle: unknown key", "pretrain.lr: expected a number",
                "finetune.max_steps: expected an integer", "bogus: unknown key"):
        assert key in text, text
    assert len(err.value.problems) >= 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model": {"d_model": 30, "n_heads": 4}}, "not divisible"),
        ({"pretrain": {"noise_density": 1.5}}, "pretrain.noise_density"),
        ({"finetune": {"mixture": {"translate": 0, "summarize": 0, "answer": 0}}},
         "finetune.mixture"),
        ({"finetune": {"schedule": "exponential"}}, "finetune.schedule: expected one of"),
        ({"adversarial": {"select": "bleu", "bleu_examples": 0}}, "select: bleu needs"),
        ({"finetune": {"max_steps": 0, "max_epochs": 0}}, "max_steps or max_epochs"),
        ({"pretrain": {"betas": [0.9]}}, "pretrain.betas"),
        ({"tokenizer": {"vocab_size": 100}}, "tokenizer.vocab_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_values(override: dict[str, Any], message: str) -> None:
    data = tiny_dict()
    for key, value in override.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(data)


def test_overrides_and_unknown_override() -> None:
    r = load_recipe("tiny", {"finetune.lr": 1e-4, "model.dropout": 0.0})
    assert r.finetune.lr == 1e-4 and r.model.dropout == 0.0
    with pytest.raises(RecipeError, match=r"finetune\.nope: unknown key"):
        load_recipe("tiny", {"finetune.nope": 1})


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(bad)


def test_missing_data_files_named(tmp_path: Path) -> None:
    (tmp_path / "monolingual.train.txt").write_text("hello\n")
    r = load_recipe("tiny", {"data_dir": str(tmp_path)})
    with pytest.raises(RecipeError) as err:
        check_data(r, ("tokenizer", "pretrain", "finetune", "adversarial"))
    assert "translate.train.jsonl" in str(err.value)
    assert "answer.valid.jsonl" in str(err.value)
    with pytest.raises(RecipeError, match="not a directory"):
        check_data(load_recipe("tiny", {"data_dir": str(tmp_path / "nope")}), ("pretrain",))


def test_cli_reports_recipe_errors_before_compute(
    train_cli: Callable[..., Any], tmp_path: Path
) -> None:
    proc = train_cli("tiny", "--out", str(tmp_path / "run"), "--set", "pretrain.lr=-1",
                     "--set", "model.n_heads=3", check=False)
    assert proc.returncode == 2
    assert "pretrain.lr" in proc.stderr and "model.d_model" in proc.stderr
    assert not (tmp_path / "run").exists()
