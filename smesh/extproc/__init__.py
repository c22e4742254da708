"""The Envoy external processor (arrives with the extproc issue)."""
