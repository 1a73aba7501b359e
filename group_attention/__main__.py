"""``python -m group_attention predict ...``: the same command line as ``group-attention``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
