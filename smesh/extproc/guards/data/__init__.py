"""Data files shipped with the guards (name lists built by ``build_names.py``)."""
