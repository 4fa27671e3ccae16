"""Model servers piagent can talk to, behind the `Provider` protocol."""
