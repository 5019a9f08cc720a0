"""``python -m normlight ...`` runs the ``normlight`` command."""

import sys

from normlight.cli import main

if __name__ == "__main__":
    sys.exit(main())
