import sys

from auctioneer.cli import main

sys.exit(main())
