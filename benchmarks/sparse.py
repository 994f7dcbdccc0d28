"""When does a sparse matrix product beat a dense one on this machine? The same measurement
as `prunescope bench sparse` (defaults: n=1000, sparsities 0.5 and 0.9, 5 trials)."""

import sys

from harness.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sparse", *sys.argv[1:]]))
