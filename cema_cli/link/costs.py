"""The modelled cost columns of a result row: formulas over the row's counted and measured
figures and the user's assumptions (``CostModel``). No torch import; every formula is one line a
reader can check by hand (README, "Cost columns"):

- ``upload_seconds`` = rtt/2 + 8 * (uplink bytes / batches) / uplink rate: the time an edge
  batch's uploads take to reach the cloud, the domain's bytes spread evenly over its batches;
- ``param_delay_seconds`` = one-way(uplink bytes per batch) + cloud compute per batch +
  one-way(downlink bytes per sync), one-way(B) = rtt/2 + 8 B / rate: the round trip from an
  edge batch to the parameters learned from it reaching the edge (no queueing; the simulated
  delay with --cloud-throughput queues, see channel.ComputeDelay);
- ``cloud_cost`` = price per hour * cloud hours.

Cloud compute time is GFLOPs / --cloud-throughput when that is given, else the measured cloud
seconds; ``cloud_time_basis`` says which. An absent rate or rtt counts 0; a column whose
assumptions are all absent stays empty (None).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from cema_cli.link.channel import one_way_seconds
from cema_cli.config import CostModel


def cloud_compute_seconds(costs: CostModel, cloud_gflops: float, cloud_seconds: float) -> float:
    """Modelled (GFLOPs / throughput) when --cloud-throughput is given, else measured."""
    return cloud_gflops / costs.cloud_throughput_gflops if costs.cloud_throughput_gflops else cloud_seconds


def modelled_columns(costs: CostModel, traffic: dict[str, Any], batches: float) -> dict[str, Any]:
    """The modelled columns of one row from its ``traffic`` (bytes, syncs, cloud GFLOPs and
    seconds) over ``batches`` edge batches."""
    rtt, up_rate, down_rate = costs.rtt_ms, costs.uplink_rate_bps, costs.downlink_rate_bps
    compute_s = cloud_compute_seconds(costs, traffic["cloud_gflops"], traffic["cloud_seconds"])
    up_per_batch = traffic["uplink_bytes"] / batches if batches else 0.0
    columns: dict[str, Any] = {"upload_seconds": None, "param_delay_seconds": None, "cloud_cost": None,
                               "cloud_time_basis": "throughput" if costs.cloud_throughput_gflops else "measured",
                               "cost_model": json.dumps(asdict(costs), sort_keys=True)}
    if rtt is not None or up_rate is not None:
        columns["upload_seconds"] = one_way_seconds(up_per_batch, up_rate, rtt)
    if any(v is not None for v in (rtt, up_rate, down_rate, costs.cloud_throughput_gflops)):
        syncs = traffic["sync_events"]
        columns["param_delay_seconds"] = (
            one_way_seconds(up_per_batch, up_rate, rtt) + (compute_s / batches if batches else 0.0)
            + one_way_seconds(traffic["downlink_bytes"] / syncs, down_rate, rtt)
        ) if syncs else 0.0
    if costs.cloud_price_per_hour is not None:
        columns["cloud_cost"] = costs.cloud_price_per_hour * compute_s / 3600.0
    return columns
