"""Feature tables: point-in-time weekly features for Feast."""
