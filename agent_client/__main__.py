import sys

from agent_client.cli import main

sys.exit(main())
