"""The ground floor: settings, the address rules, the proxy's error shape and the provider registry.

Every other room may import these; they import nothing of Lectr's.
"""
