import sys

from kvoperator.cli import main

sys.exit(main())
