"""towerctl: a terminal control tower for supervising live AI agents."""

__version__ = "0.1.0"
