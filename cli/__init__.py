"""The command-line layer: the ``auctioneer`` and ``agent-client`` commands, above every library.

Libraries (``protocol``, ``auctioneer``, ``agent_client``, ``simulation``) raise typed errors and
log; only this package parses arguments, reads files named on the command line, prints with
``rich`` and turns a user's mistake into one line and exit status 2. Entry points: :mod:`cli.main`.
"""
