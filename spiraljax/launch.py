"""``python -m spiraljax.launch -n 2 -d 2 -- python train.py --distributed ...``: N local JAX
processes on CPU (see :mod:`spiraljax.train.distributed`)."""

import sys

from spiraljax.train.distributed import main

if __name__ == "__main__":
    sys.exit(main())
