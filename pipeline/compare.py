"""``python -m pipeline.compare``: the command is `pipeline.cli.compare`."""

import sys

from pipeline.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
