"""`python -m keyshift ...`: the same command line as `keyshift ...`."""

from __future__ import annotations

from keyshift.cli.main import main

if __name__ == "__main__":
    main()
