"""The package version (a module of its own, so any room can read it without import cycles)."""

__version__ = "0.1.0"
