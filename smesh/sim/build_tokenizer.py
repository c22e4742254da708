"""Train the simulator's small byte-level BPE tokenizer from a corpus built here.

Nothing may be downloaded at run time, yet usage counts must come from a real BPE
tokenizer (DESIGN.md decision 9: chars/4 is off by -75 % to +49 %). So this module
assembles a deterministic English-ish corpus (a few hundred KB from the word list
below, with punctuation, digits and a little non-ASCII text) and trains a byte-level
BPE with ``tokenizers``. The result is committed as ``smesh/sim/data/tokenizer.json``;
rerun this module only to change it::

    .venv/bin/python -m smesh.sim.build_tokenizer [OUTPUT]

The same code always yields the same file: the corpus comes from a seeded
``random.Random`` and the BPE trainer breaks ties deterministically.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "DEFAULT_OUTPUT",
    "VOCAB_SIZE",
    "WORDS",
    "build_corpus",
    "build_tokenizer",
    "main",
    "write_tokenizer",
]

VOCAB_SIZE = 4000
SEED = 20240601
CORPUS_SENTENCES = 12000
DEFAULT_OUTPUT = Path(__file__).parent / "data" / "tokenizer.json"

# Common English words, plus words that LLM traffic is full of. Order matters: earlier
# words are drawn more often (a rough Zipf law), so they become single tokens.
_WORD_TEXT = """
    the of and to a in is it you that he was for on are with as I his they be at one
    have this from or had by not word but what some we can out other were all there when
    up use your how said an each she which do their time if will way about many then them
    write would like so these her long make thing see him two has look more day could go
    come did number sound no most people my over know water than call first who may down
    side been now find any new work part take get place made live where after back little
    only round man year came show every good me give our under name very through just form
    sentence great think say help low line differ turn cause much mean before move right
    boy old too same tell does set three want air well also play small end put home read
    hand port large spell add even land here must big high such follow act why ask men
    change went light kind off need house picture try us again animal point mother world
    near build self earth father head stand own page should country found answer school
    grow study still learn plant cover food sun four between state keep eye never last let
    thought city tree cross farm hard start might story saw far sea draw left late run
    while press close night real life few north open seem together next white children
    begin got walk example ease paper group always music those both mark often letter
    until mile river car feet care second book carry took science eat room friend began
    idea fish mountain stop once base hear horse cut sure watch color face wood main
    enough plain girl usual young ready above ever red list though feel talk bird soon
    body dog family direct pose leave song measure door product black short numeral class
    wind question happen complete ship area half rock order fire south problem piece told
    knew pass since top whole king space heard best hour better true during hundred five
    remember step early hold west ground interest reach fast verb sing listen six table
    travel less morning ten simple several vowel toward war lay against pattern slow
    center love person money serve appear road map rain rule govern pull cold notice voice
    unit power town fine certain fly fall lead cry dark machine note wait plan figure star
    box noun field rest correct able pound done beauty drive stood contain front teach week
    final gave green quick develop ocean warm free minute strong special mind behind clear
    tail produce fact street inch multiply nothing course stay wheel full force blue object
    decide surface deep moon island foot system busy test record boat common gold possible
    plane stead dry wonder laugh thousand ago ran check game shape equate hot miss brought
    heat snow tire bring yes distant fill east paint language among model request response
    server token tokens prompt answer user assistant message content data service network
    cluster route tenant budget policy error value result function return class string
    number list object file system query search price order account customer email phone
    address payment invoice report summary translate explain example question document
    code python json api http latency throughput gateway proxy envoy deploy kubernetes
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())

_PUNCT_END = (".", ".", ".", "?", "!", ".", ":", ";")
_SUFFIXES = ("s", "ed", "ing", "er", "ly", "ness", "tion", "able", "ment", "est")
_PREFIXES = ("un", "re", "pre", "over", "out", "mis")
_NON_ASCII = ("café", "naïve", "über", "déjà vu", "résumé", "señor", "Zürich", "€", "—", "…")


def _zipf_weights(count: int) -> list[float]:
    return [1.0 / (rank + 10) for rank in range(count)]


def _sentence(rng: random.Random, weights: list[float]) -> str:
    """One sentence: words, an occasional comma, number, capital or non-ASCII word."""
    length = rng.randint(4, 18)
    words = rng.choices(WORDS, weights=weights, k=length)
    parts: list[str] = []
    for index, drawn in enumerate(words):
        word = drawn
        roll = rng.random()
        if roll < 0.04:
            parts.append(str(rng.randint(0, 9999)))
        elif roll < 0.05:
            parts.append(rng.choice(_NON_ASCII))
        if roll > 0.8:
            word += rng.choice(_SUFFIXES)
        elif roll > 0.75:
            word = rng.choice(_PREFIXES) + word
        parts.append(word.capitalize() if index == 0 or roll > 0.97 else word)
        if index < length - 1 and rng.random() < 0.08:
            parts[-1] += ","
    return " ".join(parts) + rng.choice(_PUNCT_END)


def build_corpus(seed: int = SEED, sentences: int = CORPUS_SENTENCES) -> list[str]:
    """Return the training corpus: paragraphs of generated sentences (deterministic)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible corpus, not cryptography
    weights = _zipf_weights(len(WORDS))
    paragraphs: list[str] = []
    current: list[str] = []
    for _ in range(sentences):
        current.append(_sentence(rng, weights))
        if rng.random() < 0.15:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    # Every word once more in lower and title case, so none is left unmerged.
    paragraphs.append(" ".join(WORDS))
    paragraphs.append(" ".join(word.capitalize() for word in WORDS))
    return paragraphs


def build_tokenizer(seed: int = SEED, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train a byte-level BPE tokenizer on :func:`build_corpus`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tokenizer.train_from_iterator(build_corpus(seed), trainer=trainer)
    return tokenizer


def write_tokenizer(path: Path = DEFAULT_OUTPUT, seed: int = SEED) -> Path:
    """Train the tokenizer and write it as compact JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_tokenizer(seed).to_str(pretty=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the tokenizer to the path given (default: the packaged data file)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DEFAULT_OUTPUT
    written = write_tokenizer(target)
    print(f"wrote {written} ({written.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
