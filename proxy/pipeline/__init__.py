"""The request path: headers, body, authentication against the key directory, routing, budgets'
hot check, the provider adapters, and the relay of one upstream exchange (SSE included).
"""
