"""`python -m kvnode.cluster`: the same as `kvnode local-cluster`."""

import sys

from kvnode.cli.local_cluster import main

sys.exit(main())
