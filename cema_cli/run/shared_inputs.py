"""Read-only inputs shared by a sweep's cells, computed once (issue 11, "Executors").

A cell alone would open its dataset and corrupt its domains itself; in a sweep many cells read
the same ones (every method and seed of a domain), so the driver computes each input once, on
first need, and hands it to the cells that read it:

- the in-memory dataset (the embedded digits: its test split), once per dataset setting;
- each corrupted domain of it, once per (dataset setting, corruption, severity);
- EATA's clean set, once per (dataset setting, count, seed);
- what a run caches for its later domains (``Session.cache``: EATA's Fisher diagonal, the
  counted FLOPs), kept per worker process across the cells with the same models, clean set and
  method options (``session_cache``), so a worker computes EATA's Fisher once per seed.

A cell receives a ``Layout`` (what it gets) and the parts as values: under ``serial`` the objects
themselves, under ``process`` pickled to the worker (torch moves the tensors to shared memory),
under ``ray`` object references, each ``ray.put`` once. ``assemble`` rebuilds the inputs in the
worker; ``api.run_benchmark`` opens the dataset from them. An input the driver cannot compute is
left to the cell, which then fails (or not) exactly as it would alone, so the rows never depend
on the sharing. On-disk datasets stream from their files: of those only the clean set is shared.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cema_cli.config import RunConfig
from cema_cli.data import DATASETS, ON_DISK_OPTIONS, open_dataset

# Method options that ask for clean in-distribution images (EATA's Fisher set).
CLEAN_COUNT_OPTIONS = ("fisher_samples",)


@dataclass(frozen=True)
class Layout:
    """What a cell's parts are, in order: the dataset (when shared), its domains, its clean sets."""

    dataset: bool
    domains: tuple[tuple[str, int], ...] = ()
    clean: tuple[tuple[int, int], ...] = ()


@dataclass
class CellInputs:
    """A cell's shared inputs, rebuilt in the worker."""

    dataset: Any = None  # an in-memory dataset with the cell's domains computed, or None: open it
    clean: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # (count, seed) -> clean images
    cache: dict[Any, Any] = field(default_factory=dict)  # the Session.cache of this worker for the cell's setting

    def open(self, config: RunConfig, pin_memory: bool) -> Any:
        """The dataset as ``open_dataset`` gives it, with the shared parts already computed."""
        dataset = self.dataset if self.dataset is not None else open_dataset(config, pin_memory)
        return WithCleanSets(dataset, self.clean) if self.clean else dataset


class WithCleanSets:
    """A dataset whose ``clean_samples`` answers from precomputed sets (the same images)."""

    def __init__(self, dataset: Any, clean: dict[tuple[int, int], torch.Tensor]) -> None:
        self.dataset, self.clean = dataset, clean

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "clean"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def clean_samples(self, count: int, seed: int = 0) -> torch.Tensor:
        found = self.clean.get((count, seed))
        return found if found is not None else self.dataset.clean_samples(count, seed)


def assemble(config: RunConfig, layout: Layout, parts: Sequence[Any]) -> CellInputs:
    """The worker's side: parts (values, not references) in the layout's order -> CellInputs."""
    parts = list(parts)
    base = parts.pop(0) if layout.dataset else None
    domains = dict(zip(layout.domains, parts[: len(layout.domains)]))
    clean = dict(zip(layout.clean, parts[len(layout.domains):]))
    return CellInputs(base.with_domains(domains) if base is not None else None, clean, session_cache(config))


# What a cell's stream is made of: every other field of a cell's configuration (models, weights,
# dataset, seed, device, method options) decides what a Session caches.
STREAM_FIELDS = ("methods", "corruptions", "severities", "samples", "batch_size", "protocol", "order", "dirichlet",
                 "label_sampler", "gradual", "window", "channel", "collapse_share")
SESSION_CACHES: OrderedDict[str, dict[Any, Any]] = OrderedDict()  # this process's, most recent last
KEPT_SESSION_CACHES = 16


def session_cache(config: RunConfig) -> dict[Any, Any]:
    """This process's Session.cache for the configuration's setting (the same dict for every cell
    of the setting, as a compare run shares one across its domains); the oldest dropped past 16."""
    key = json.dumps({k: v for k, v in asdict(config).items() if k not in STREAM_FIELDS}, sort_keys=True, default=str)
    cache = SESSION_CACHES.pop(key, None)
    SESSION_CACHES[key] = cache if cache is not None else {}
    while len(SESSION_CACHES) > KEPT_SESSION_CACHES:
        SESSION_CACHES.popitem(last=False)
    return SESSION_CACHES[key]


def pin_memory(config: RunConfig) -> bool:
    """What ``api.open_session`` passes to ``open_dataset`` for this configuration."""
    from cema_cli.run.api import resolve_device

    return resolve_device(config.device).type == "cuda"


def dataset_key(config: RunConfig) -> str:
    """What ``open_dataset`` reads from a configuration: equal keys, equal datasets."""
    fields = ["dataset", "constants", "data_root", *ON_DISK_OPTIONS, "seed", "device"]  # seed: on-disk subsets
    return json.dumps({name: getattr(config, name) for name in fields}, sort_keys=True, default=str)


def shared_dataset_key(config: RunConfig) -> str:
    """In-memory datasets do not depend on the seed or the device: one per setting."""
    return json.dumps({name: getattr(config, name) for name in ("dataset", "constants", "data_root")}, default=str)


@dataclass
class Share:
    """What one cell is sent: its layout, the store keys of its parts, and the parts."""

    layout: Layout | None = None  # None: nothing shared, the cell computes its inputs alone
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)


@dataclass
class Plan:
    """A cell's shared inputs before they are computed: the layout, the store keys, the makers."""

    layout: Layout
    keys: list[tuple[Any, ...]]
    makers: list[Callable[[], Any]]


class SharedInputs:
    """The driver's side for the cells about to run: each input computed on first need, ``put``
    once (``ray.put`` under Ray), and dropped when the last cell that reads it has finished
    (executors run a domain's cells together, so a domain lives only while they run)."""

    def __init__(self, configs: Sequence[RunConfig], put: Callable[[Any], Any] = lambda value: value) -> None:
        self.put = put
        self.store: dict[tuple[Any, ...], Any] = {}
        self.datasets: dict[str, Any] = {}  # key -> the dataset, or the error that opening it raised
        self.plans = {id(config): self._plan(config) for config in configs}
        self.users = Counter(key for plan in self.plans.values() if plan for key in plan.keys)  # cells yet to finish

    def acquire(self, config: RunConfig) -> Share:
        """The parts to send with this cell (computed now when new)."""
        plan = self.plans.get(id(config))
        if plan is None:
            return Share()
        try:
            for key, make in zip(plan.keys, plan.makers):
                if key not in self.store:
                    self.store[key] = self.put(make())
        except Exception:  # noqa: BLE001 - the cell meets the same error alone and records it
            return Share()
        return Share(plan.layout, plan.keys, [self.store[key] for key in plan.keys])

    def release(self, share: Share) -> None:
        """The cell finished: drop what no cell still to finish reads."""
        for key in share.keys:
            self.users[key] -= 1
            if self.users[key] <= 0:
                self.store.pop(key, None)

    def _plan(self, config: RunConfig) -> Plan | None:
        """What the cell reads, or None when it is left to compute its inputs alone (an error)."""
        try:
            in_memory = not getattr(DATASETS.get(config.dataset), "on_disk", False)
            counts = clean_counts(config)
            if not in_memory and not counts:
                return Plan(Layout(False), [], [])  # an on-disk dataset streams from its files: nothing to share
            dataset = self._dataset(config)
        except Exception:  # noqa: BLE001 - the cell meets the same error alone and records it
            return None
        data = shared_dataset_key(config) if in_memory else dataset_key(config)
        keys: list[tuple[Any, ...]] = []
        makers: list[Callable[[], Any]] = []
        domains: tuple[tuple[str, int], ...] = ()
        if in_memory:
            domains = tuple(config.domains())
            keys += [("dataset", data), *(("domain", data, *domain) for domain in domains)]
            makers += [lambda: dataset.with_domains({}), *(lambda d=domain: dataset.corrupt_domain(*d) for domain in domains)]
        clean = tuple((count, config.seed) for count in counts)
        keys += [("clean", data, *key) for key in clean]
        makers += [lambda k=key: dataset.clean_samples(*k) for key in clean]
        return Plan(Layout(in_memory, domains, clean), keys, makers)

    def _dataset(self, config: RunConfig) -> Any:
        key = dataset_key(config)
        if key not in self.datasets:
            try:
                self.datasets[key] = open_dataset(config, pin_memory(config))
            except Exception as error:  # noqa: BLE001 - remembered: every cell of this setting meets it alone
                self.datasets[key] = error
        found = self.datasets[key]
        if isinstance(found, Exception):
            raise found
        return found


def clean_counts(config: RunConfig) -> list[int]:
    """How many clean images each method of the cell asks for (EATA: its Fisher set), once each.
    The count is an option (-o eata.fisher_samples=N), not a preset setting."""
    from cema_cli.run.api import method_configs

    configs = method_configs(config, config.preset).values()
    counts = [getattr(method_config, name) for _, method_config in configs for name in CLEAN_COUNT_OPTIONS
              if hasattr(method_config, name)]
    return list(dict.fromkeys(counts))
