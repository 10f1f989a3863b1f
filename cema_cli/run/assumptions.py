"""What a dataset's samples and a model's layers allow (README, "Beyond images"): the uplink
encodings of the samples, and the methods whose assumptions hold. Checked once, when a run's
dataset and edge model are open, before anything runs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from cema_cli.config import RunConfig
from cema_cli.errors import CemaError
from cema_cli.strategies.base import image_only_reason, needs_batchnorm

IMAGE_ENCODINGS = ("uint8", "jpeg", "float32")
SAMPLE_WORDS = {"image": "images", "signal": "int16 sensor windows", "text": "sentences as token ids"}


def modality(dataset: Any) -> str:
    """'image' (the default), 'signal' or 'text': what a dataset's samples are."""
    return getattr(dataset, "modality", "image")


def resolved_channel(config: RunConfig, dataset: Any) -> RunConfig:
    """``--uplink-encoding native`` becomes the dataset's own encoding (uint8 for images); an
    encoding the samples cannot take is refused."""
    native = getattr(dataset, "native_encoding", "uint8")
    allowed = getattr(dataset, "encodings", IMAGE_ENCODINGS)
    encoding = native if config.channel.uplink_encoding == "native" else config.channel.uplink_encoding
    if encoding not in allowed:
        raise CemaError(f"--uplink-encoding {encoding}: dataset {config.dataset!r} uploads {SAMPLE_WORDS[modality(dataset)]}, "
                        f"which travel as {' or '.join(allowed)}; use --uplink-encoding native ({native}) or drop the flag.")
    return replace(config, channel=replace(config.channel, uplink_encoding=encoding))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def refusal(method: str, target: Any, kind: str, batchnorm: bool) -> str | None:
    """Why ``method`` cannot run on these samples and this edge model, or None."""
    reason = image_only_reason(target)
    if reason and kind != "image":
        return f"{method} {reason}"
    if needs_batchnorm(target) and not batchnorm:
        return f"{method} only re-estimates BatchNorm statistics and the edge model has no BatchNorm"
    return None


def check_assumptions(methods: dict[str, tuple[Any, Any]], dataset: Any, edge_model: nn.Module, edge_name: str) -> None:
    """One line naming every method refused here and the ones that run (the README's table)."""
    kind, batchnorm = modality(dataset), has_batchnorm(edge_model)
    reasons = {m: refusal(m, target, kind, batchnorm) for m, (target, _) in methods.items()}
    refused = [why for why in reasons.values() if why]
    if refused:
        runnable = [m for m, why in reasons.items() if not why]
        keep = f"run --methods {','.join(runnable)}" if runnable else "choose other methods (`cema list methods`)"
        raise CemaError(f"not on {SAMPLE_WORDS[kind]} with {edge_name}: {'; '.join(refused)}. "
                        f"Drop {'it' if len(refused) == 1 else 'them'}: {keep} (README, \"Beyond images\").")
