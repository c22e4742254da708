"""Build ``data/names.json``, the name lists PERSON detection ships with (run once, offline).

Run: ``.venv/bin/python -m smesh.extproc.guards.build_names`` (needs the dev extra ``faker``).

The gateway must not download anything at run time, so the first names and surnames come
from Faker's per-locale person providers (census-style lists) and are committed as JSON.
``places`` lists words that end a place name ("Victoria Station").
``common`` lists the names that are also everyday words ("Will", "May", "Young"): a pair
made only of those is not taken for a person without a cue such as "Mr" or "Dear".
The output is sorted, so rerunning with the same Faker version changes nothing.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["LOCALES", "build", "main"]

# Latin-script locales: the scanner's name tokens are Latin capitalised words.
LOCALES = (
    "en_US", "en_GB", "en_IE", "en_IN", "en_NZ",
    "de_DE", "de_AT", "de_CH",
    "fr_FR", "fr_BE", "fr_CH", "fr_CA",
    "es_ES", "es_MX", "es_AR", "es_CO",
    "it_IT", "nl_NL", "nl_BE", "pt_PT", "pt_BR",
    "pl_PL", "sv_SE", "da_DK", "no_NO", "fi_FI", "cs_CZ",
)  # fmt: skip

# Names that are also ordinary words, months, or names of technologies. Matched
# case-sensitively against the capitalised form.
_EVERYDAY = """
April August June May Summer Autumn Winter Spring Dawn Eve Sky Sunny Storm Rain River
Will Mark Grant Rose Hope Joy Faith Grace Amber Crystal Iris Ivy Lily Holly Jade Pearl
Ruby Julia Rust Swift Go Java Python Perl Dart Elixir Pascal Ada Lisp Kotlin
Art Chase Chance Drew Frank Gene Glen Hunter Jack Lance Miles Nick Pat Ray Rich Rob Sue
Van Wade Dean Cliff Bill Bud Carol Guy Don Penny Sandy Rusty Buck Clay
Stone Wood Woods Hill Hills Field Fields Brook Brooks Lake Marsh Moor Ford Bridge Bank
Banks Street Church Hall House Castle Tower Gate Gates Park Parks Lane Way Wells Well
Black White Green Brown Gray Grey Red Blue Gold Golden Silver Young Old Long Short Little
Small Strong Good Best Fine Bright Sharp Wise Love Day Night Morning Price Cash
Cost Pay Sale Sales Trade Power Energy Law Rule Key Page Book Bell Ball Case Glass Room
Wall West East North South King Queen Prince Duke Lord Knight Bishop Pope
Parent Real Read Job Lot Floor Else Company Major Minor General
Judge Master Temple Pound Bond Stock Share Story Post Mail Cross
Bay Port Dock Haven Sands Shore Vale Dale Rock Rocks Coal Frost Snow Hail Wind
Fox Wolf Bear Lamb Crow Swan Drake Finch Hawk Jay Robin Wren Lark Fish Bass Pike Salmon
Rice Bean Berry Apple Olive Cherry Plum Peach Pepper Ginger Sage Basil Heather Daisy
Violet Poppy Hazel Willow Laurel Myrtle Fern Moss Reed Rush Ash Elm Oak Birch Pine
Catholic Dutch English French German Irish Welsh Norman Roman Sterling
Amazon Oracle Google Tesla Dell Cisco Intel Nokia Adobe Alexa Siri Cortana
Docker Kubernetes Linux Windows Ubuntu Debian Fedora Arch Mint Envoy Redis Postgres
"""


# Words that end the name of a place or an organisation and are rarely surnames ("Hill" and
# "Hall" are surnames too, so they are not here): "Charlotte Street", "Victoria Station".
_PLACES = """
Street Road Avenue Boulevard Square Place Drive Terrace Crescent Gardens Parkway Station Airport
Harbour Harbor Beach River Island Islands Valley Mountain Falls Springs Creek Canyon Cathedral
Abbey Palace Centre Center College University School Academy Institute Hospital Clinic Museum
Library Theatre Theater Hotel Arena Stadium Market Mall Plaza Group Company Foundation Trust
Society Club Strasse Straße Platz Allee Bahnhof Rue Calle Piazza Straat Plein
"""


def _names(locale: str, attrs: tuple[str, ...]) -> set[str]:
    provider: Any = importlib.import_module(f"faker.providers.person.{locale}").Provider
    found: set[str] = set()
    for attr in attrs:
        values = getattr(provider, attr, ())
        found.update(values.keys() if isinstance(values, dict) else values)
    return found


_APOS = "\u2019"
_TOKEN = re.compile(rf"[^\W\d_][\w'{_APOS}]*(?:-[^\W\d_][\w'{_APOS}]*)*")


def _tokens(entries: set[str]) -> set[str]:
    """Capitalised tokens of each entry: "van der Plas" gives "Plas", "Jean-Pierre" stays whole."""
    out: set[str] = set()
    for entry in entries:
        for token in _TOKEN.findall(entry.replace(_APOS, "'")):
            if len(token) >= 2 and token[0].isupper() and not token.isupper():
                out.add(token)
    return out


def build() -> dict[str, Any]:
    first: set[str] = set()
    last: set[str] = set()
    for locale in LOCALES:
        first |= _tokens(_names(locale, ("first_names", "first_names_male", "first_names_female")))
        last |= _tokens(_names(locale, ("last_names", "last_names_male", "last_names_female")))
    lorem: Any = importlib.import_module("faker.providers.lorem.en_US").Provider
    everyday = set(_EVERYDAY.split()) | {w.capitalize() for w in lorem.word_list}
    common = (first | last) & everyday
    return {
        "about": "first names and surnames from Faker person providers; see build_names.py",
        "locales": list(LOCALES),
        "first": sorted(first),
        "last": sorted(last),
        "common": sorted(common),
        "places": sorted(set(_PLACES.split())),
    }


def main() -> None:
    out = Path(__file__).with_name("data") / "names.json"
    out.write_text(json.dumps(build(), ensure_ascii=False, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
