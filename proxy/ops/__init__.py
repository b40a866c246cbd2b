"""Running the service: `lectr up`, Prometheus metrics, logging.
"""
