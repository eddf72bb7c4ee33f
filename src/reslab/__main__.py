"""``python -m reslab`` (and ``torchrun -m reslab train …``)."""

import sys

from reslab.cli import main

if __name__ == "__main__":
    sys.exit(main())
