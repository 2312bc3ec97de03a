"""The live web dashboard: a spectator's view of an exchange in a browser, and its metrics.

:mod:`dashboard.board` folds the feed into what the page shows; :mod:`dashboard.spectator` follows
an exchange without registering (feed and ``sync_request`` only); :mod:`dashboard.web` serves the
page (``static/``, no build step, nothing fetched from the internet), its server-sent events and
``/metrics``.
"""
