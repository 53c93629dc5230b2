import sys

from kvnode.cli.node import main

sys.exit(main())
