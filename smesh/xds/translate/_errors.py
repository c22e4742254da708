"""The one error the translators raise (re-exported as ``smesh.xds.translate.TranslateError``).

It lives in its own module so that the translator modules can raise it without importing
the package ``__init__`` that imports them.
"""

from __future__ import annotations

__all__ = ["TranslateError"]


class TranslateError(ValueError):
    """The config is valid on its own but cannot be turned into Envoy resources as it is."""
