"""The library's version, in one place: the package root and checkpoints read it from here."""

__version__ = "0.1.0.dev0"
