"""Simulated markets: scenario files, in-process and networked runs, summaries and plots.

This package sits above both sides (it builds agents and runs the auctioneer), which is why it is
neither in ``auctioneer/`` nor in ``agent_client/``; ``auctioneer simulate`` is its command.
"""
