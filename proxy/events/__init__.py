"""Where events go once the response is on its way: the writer (Postgres, with its spool and
journal) and the OpenTelemetry exporter.
"""
