"""``python -m agent_client``: the ``agent-client`` command (an entry point; nothing imports this module)."""

import sys

from cli.main import agent_client

sys.exit(agent_client())
