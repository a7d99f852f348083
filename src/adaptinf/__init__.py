"""Adapt-∞: lifelong instruction tuning by dynamic data selection."""
__version__ = "0.1.0"
