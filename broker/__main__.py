"""`python -m broker ...`: the same as the `netbroker` command."""

import sys

from broker.cli import main

sys.exit(main())
