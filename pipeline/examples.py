"""``python -m pipeline.examples``: the command is `pipeline.cli.examples`."""

import sys

from pipeline.cli.examples import main

if __name__ == "__main__":
    sys.exit(main())
