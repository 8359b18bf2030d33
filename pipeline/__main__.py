"""``python -m pipeline [overrides]``: train and record one job, or a sweep with ``-m``
(the command line itself is `pipeline.cli.train`)."""

from pipeline.cli.train import entry

entry()
