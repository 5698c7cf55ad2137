"""Compatibility entry point for users of the reference LRNet training package.

    python evaluate.py -g -d DF -l raw -b all

runs ``lrnet evaluate`` with the same flags (see ``lrnet evaluate -h`` for the extras).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from lrnet.cli import main
    except ImportError:  # running from a clone without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from lrnet.cli import main
    sys.exit(main(["evaluate", *sys.argv[1:]]))
