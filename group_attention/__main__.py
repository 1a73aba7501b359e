"""``python -m group_attention predict ...``: the command line of the fundus application (``group-attention``).

The package's one door into the application besides the console script: the core never imports
:mod:`group_attention.fundus`; running the package as a program does.
"""

from .fundus.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
