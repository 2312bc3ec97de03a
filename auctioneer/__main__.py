"""``python -m auctioneer``: the ``auctioneer`` command (an entry point; nothing imports this module)."""

import sys

from cli.main import auctioneer

sys.exit(auctioneer())
