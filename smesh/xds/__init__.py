"""The Envoy control plane: config schema, translators, snapshots, cache and ADS server."""
