"""Adaptation strategies by name (shared/spec/methods.md). Listing imports nothing heavy.

Register your own with ``STRATEGIES.register("name", MyStrategy, "summary")``; a strategy is a
class with ``__init__(self, context, config)`` and ``step(self, images) -> logits``
(see ``cema_cli.strategies.base``).
"""

from cema_cli.registry import Registry

STRATEGIES = Registry("method")
STRATEGIES.register("source", "cema_cli.strategies.source:Source", "no adaptation: source model, eval mode (section 1)")
STRATEGIES.register("bn", "cema_cli.strategies.bn:BatchNormAdapt", "test-batch BatchNorm statistics, no gradients, on the edge (section 1)")
