"""``python -m zoo_core.cli``: the ``zoo`` command (as ``torchrun … -m zoo_core.cli train …`` runs it)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
