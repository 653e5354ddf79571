"""`python -m jobsprint.metrics` (the `jobsprint-metrics` command)."""

from __future__ import annotations

import sys

from jobsprint.metrics.cli import main as _main


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
