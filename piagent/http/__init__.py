"""The HTTP layer: the app factory, one module per door, and the helpers, responses and errors they share."""
