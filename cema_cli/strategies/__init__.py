"""Adaptation strategies by name (shared/spec/methods.md). Listing imports nothing heavy.

Register your own with ``STRATEGIES.register("name", MyStrategy, "summary")``: a target is a
``Strategy`` subclass, or a factory ``(context, config) -> Strategy`` (tent, eta and eata pick
their placement this way); either carries ``config_class``, the dataclass of its options
(see ``cema_cli.strategies.base`` and examples/custom_strategy.py).
"""

from cema_cli.registry import Registry

STRATEGIES = Registry("method")
STRATEGIES.register("source", "cema_cli.strategies.source:Source", "no adaptation: source model, eval mode (section 1)")
STRATEGIES.register("bn", "cema_cli.strategies.bn:BatchNormAdapt", "test-batch BatchNorm statistics, no gradients, on the edge (section 1)")
STRATEGIES.register("tent", "cema_cli.strategies.tent:make_tent", "entropy minimisation on BN affine parameters; cloud (default) or edge placement (section 2)")
STRATEGIES.register("eta", "cema_cli.strategies.eata:make_eta", "EATA without the Fisher regulariser: reliable, non-redundant samples only (section 3)")
STRATEGIES.register("eata", "cema_cli.strategies.eata:make_eata", "ETA plus the Fisher anchor from clean in-distribution images (section 3)")
STRATEGIES.register("cema", "cema_cli.strategies.cema:CEMA", "cloud-edge elastic adaptation, paper variant: dynamic E_max, E_min, distillation with replay (section 4)")
STRATEGIES.register("cema-official", "cema_cli.strategies.cema:CEMAOfficial", "CEMA as the official code: static E_max, no E_min, EATA redundancy filter (section 4.2)")
STRATEGIES.register("lame", "cema_cli.strategies.lame:LAME", "output-level Laplacian correction of each batch; backward-free, edge only (methods-more section 9)")
STRATEGIES.register("t3a", "cema_cli.strategies.t3a:T3A", "prototype head from an entropy-filtered support set of test features; backward-free, edge only (methods-more section 10)")
STRATEGIES.register("cotta", "cema_cli.strategies.cotta:make_cotta", "EMA teacher, anchor-gated augmentation average, stochastic restore; cloud (default) or edge, sends the whole teacher (methods-more section 11)")
STRATEGIES.register("rotta", "cema_cli.strategies.rotta:make_rotta", "robust BN, category-balanced memory bank, timeliness-weighted teacher-student update; cloud (default) or edge (methods-more section 12)")
