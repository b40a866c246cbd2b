"""Budget, anomaly and probe alerts: what they say, when they are raised, how they are delivered.
"""
