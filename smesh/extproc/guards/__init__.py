"""Guards: pure detectors and rewriters for prompts and answers, built once per policy version.

No gRPC here. Every function takes text (or a parsed body) and a compiled policy and
returns a result; the request pipeline decides what to do with it. A guard that raises
fails closed: the pipeline refuses the request (or ends the stream), never passes text on.
"""
