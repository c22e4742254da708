"""Data files shipped with the simulator (``tokenizer.json``); a package so wheels carry it."""
