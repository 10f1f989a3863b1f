"""cema: benchmark cloud-edge test-time adaptation under distribution shift and bandwidth budgets."""

__version__ = "0.1.0"
