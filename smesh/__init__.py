"""Sovereign Mesh: a self-hosted, multi-tenant LLM gateway built on Envoy.

Subpackages, one job each:

- ``smesh.xds``     — the control plane: config → Envoy resources → ADS.
- ``smesh.extproc`` — the inline Envoy external processor (tenancy, guards, metering).
- ``smesh.sim``     — an OpenAI-compatible model simulator standing in for GPU servers.

The import names ``xds`` and ``envoy`` belong to the protobuf packages installed by
``xds-protos``; ours live under ``smesh`` so they never shadow them.
"""

__version__ = "0.1.0"
