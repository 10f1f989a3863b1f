"""The result schema: one tidy row per (method, domain). No torch import (``cema report``)."""

from __future__ import annotations

SCHEMA_VERSION = 1

# Column order of results.csv; every row carries what is needed to reproduce it.
RESULT_COLUMNS = (
    "schema_version", "method", "dataset", "corruption", "severity", "samples", "accuracy", "correct",
    "uploads", "upload_ratio", "uplink_bytes", "downlink_bytes", "delivered_uploads", "dropped_uploads",
    "queued_uploads", "param_delay_batches", "sync_events", "seconds", "images_per_s",
    "seed", "batch_size", "protocol", "edge_model", "cloud_model", "corruption_source", "constants",
    "channel", "method_config", "device", "cema_version", "torch_version",
)

BATCH_COLUMNS = (
    "method", "corruption", "severity", "batch", "seen", "correct", "accuracy", "uploads",
    "uplink_bytes", "downlink_bytes", "e_max",
)
