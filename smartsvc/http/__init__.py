"""The HTTP layer: thin flask-smorest views over the use cases."""
