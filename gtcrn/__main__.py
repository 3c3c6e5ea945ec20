"""``python -m gtcrn`` (and ``torchrun -m gtcrn``): the ``gtcrn`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
