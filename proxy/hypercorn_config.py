"""Hypercorn settings for the proxy (`hypercorn --config python:proxy.hypercorn_config ...`).

The response a client gets must be the provider's: Hypercorn must not add `date` or `server`
headers of its own (the provider's `date` passes through).
"""

include_date_header = False
include_server_header = False
# Let oversized headers reach the app, which answers 431 with a JSON body (Hypercorn's own is bare).
h11_max_incomplete_size = 1024 * 1024
# In-flight requests get this long to finish on SIGTERM; the event writer then drains.
graceful_timeout = 30.0
keep_alive_timeout = 75.0
backlog = 2048
