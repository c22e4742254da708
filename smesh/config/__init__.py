"""The shared domain: the mesh config schema, its YAML loader and document-wide checks.

xds and extproc both read ``mesh.yaml``; neither owns its model. Nothing here imports
gRPC, protobuf or the rest of the package.
"""

from smesh.config.loader import ConfigError, load_config, parse_config
from smesh.config.references import ConfigIssue, check_references

__all__ = ["ConfigError", "ConfigIssue", "check_references", "load_config", "parse_config"]
