"""Compatibility entry point for users of the reference LRNet training package.

    python train.py -g -d DF -l raw -b g1

runs ``lrnet train`` with the same flags (see ``lrnet train -h`` for the extras: --config,
--preset, --set, --seed, --resume, --patience, --output ...).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from lrnet.cli import main
    except ImportError:  # running from a clone without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from lrnet.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
