"""What a token-budget reservation costs per request: tokenisers against the calibrated bound.

Run: ``.venv/bin/python -m bench.reservation_cost [--sizes 1 4 16] [--repeat 200]``.

For chat bodies of 1, 4 and 16 KB (English prose, and a dense mix of code, digits and
CJK), one JSON line per (body, method) with the median µs of ``--repeat`` calls:

- ``hf_tokenizers``: the builtin BPE through Hugging Face ``tokenizers``;
- ``tiktoken``: the same BPE as tiktoken ranks (what ``kind: builtin`` runs);
- ``exact``: what extproc runs when it needs the exact count (render the chat prompt,
  then tiktoken);
- ``bound``: the calibrated bytes-per-token upper bound extproc reserves from
  (``smesh/extproc/estimate.py``);

with the token count each gives and, for the bound, ``bound_over_exact`` (it must be
>= 1 for calibrated text: a reservation that under-counts could admit past a limit).
Nothing here runs as a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from smesh.config.schema import Tokenizer
from smesh.extproc.estimate import PromptEstimator
from smesh.extproc.tokens import CHAT_PATH, load_counter, prompt_text
from smesh.sim.tokenizer import TOKENIZER_PATH, load_tokenizer

BENCH = "reservation_cost"
PROSE = (
    "The committee reviewed the quarterly figures and agreed that the migration to the new "
    "cluster should proceed in stages, starting with the batch workloads next month. "
)
DENSE = (
    "def f(x):\n    return {'k': [x ** 2, 0x7fff, 3.14159]}  # 2024-03-15 192.168.1.1\n"
    "東京タワーは高い。北京欢迎你。 1234567890 -42 1e-9 Grüße ¿Dónde? 🙂🚀 "
)


def chat_body(text: str, kilobytes: int) -> dict[str, Any]:
    size = kilobytes * 1024
    content = (text * (size // len(text.encode()) + 1))[:size]
    return {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 16}


def median_us(call: Callable[[], object], repeat: int) -> float:
    for _ in range(min(20, repeat)):
        call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return round(statistics.median(samples), 2)


def run(sizes: list[int], repeat: int) -> None:
    hf = load_tokenizer(TOKENIZER_PATH)
    counter = load_counter(Tokenizer())
    estimator = PromptEstimator.for_counter(counter)
    for name, text in (("prose", PROSE), ("dense", DENSE)):
        for kilobytes in sizes:
            body = chat_body(text, kilobytes)
            size = len(orjson.dumps(body))
            prompt = prompt_text(CHAT_PATH, body)
            exact = estimator.exact(CHAT_PATH, body)
            methods: dict[str, tuple[Callable[[], object], int]] = {
                "hf_tokenizers": (
                    lambda p=prompt: hf.encode(p, add_special_tokens=False),
                    len(hf.encode(prompt, add_special_tokens=False).ids),
                ),
                "tiktoken": (lambda p=prompt: counter.count(p), counter.count(prompt)),
                "exact": (lambda b=body: estimator.exact(CHAT_PATH, b), exact),
                "bound": (lambda n=size: estimator.bound(n), estimator.bound(size)),
            }
            for method, (call, tokens) in methods.items():
                line: dict[str, Any] = {"bench": BENCH, "text": name, "body_kb": kilobytes}
                line |= {"method": method, "us": median_us(call, repeat), "tokens": tokens}
                if method == "bound":
                    line["bound_over_exact"] = round(tokens / exact, 3)
                    line["bytes_per_token"] = round(estimator.bytes_per_token, 3)
                print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    run(args.sizes, args.repeat)


if __name__ == "__main__":
    main()
