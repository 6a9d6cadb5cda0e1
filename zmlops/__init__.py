"""Zero Margin MLOps: shared settings and the project CLI."""

from zmlops.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
