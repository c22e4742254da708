"""Write cases.jsonl: the labelled PII corpus the detector's quality floors are measured on.

Run: ``.venv/bin/python tests/corpora/pii/generate.py`` (deterministic: seeded Faker; the
committed file is what this script produced with the Faker version in the venv).

Each line is one case: ``{"id", "kind": "pii" | "negative", "text", "entities": [{"type",
"value", "start"}]}``; ``value`` is the exact substring ``text[start:start+len(value)]``.
Negatives must come out of redaction untouched.

Generated cases put Faker values (seven locales) into sentences written per language.
Phone numbers are kept only when ``phonenumbers`` accepts them for the locale's country:
Faker invents US area codes that do not exist, and those are not phone numbers to any
validator. Hand-written cases below cover what generation cannot: cues, odd formats,
names outside the shipped lists, and hard negatives from real prompts.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import phonenumbers
from faker import Faker

OUT = Path(__file__).with_name("cases.jsonl")
SEED = 20240315
PER_LOCALE = 80
NEGATIVES = 180

LOCALES = {
    "en_US": ("US", "en"),
    "en_GB": ("GB", "en"),
    "de_DE": ("DE", "de"),
    "fr_FR": ("FR", "fr"),
    "es_ES": ("ES", "es"),
    "it_IT": ("IT", "it"),
    "nl_NL": ("NL", "nl"),
}

TEMPLATES: dict[str, list[str]] = {
    "en": [
        "Please contact {PERSON} at {EMAIL} or call {PHONE}.",
        "Hi, this is {PERSON}. My number changed to {PHONE}, email still {EMAIL}.",
        "Refund to IBAN {IBAN}, account holder {PERSON}.",
        "Card on file: {CREDIT_CARD}, billing contact {EMAIL}.",
        "The login from {IP_ADDRESS} was flagged for {PERSON}.",
        "Summarise this ticket: customer {PERSON} ({EMAIL}) reports the VPN drops at {IP_ADDRESS}.",
        "Config dump: aws key {SECRET} was committed by {PERSON}.",
        "Draft a reply to {PERSON}; she asked us to ring her on {PHONE} after 5pm.",
        "Wire the deposit to {IBAN} and confirm to {EMAIL}.",
        "Payment failed for {CREDIT_CARD} (customer {PERSON}, phone {PHONE}).",
    ],
    "de": [
        "Bitte kontaktieren Sie {PERSON} unter {EMAIL} oder telefonisch unter {PHONE}.",
        "Überweisung an IBAN {IBAN}, Kontoinhaber {PERSON}.",
        "Herr {PERSON} hat sich von {IP_ADDRESS} angemeldet.",
        "Fasse die Beschwerde von {PERSON} zusammen, Rückruf unter {PHONE}, Mail {EMAIL}.",
        "Die Kreditkarte {CREDIT_CARD} von {PERSON} wurde abgelehnt.",
        "Im Repository lag der Schlüssel {SECRET}, eingecheckt von {PERSON}.",
    ],
    "fr": [
        "Merci de contacter {PERSON} à {EMAIL} ou au {PHONE}.",
        "Virement sur l'IBAN {IBAN} au nom de {PERSON}.",
        "Connexion suspecte depuis {IP_ADDRESS} pour le compte de {PERSON}.",
        "Résume la demande de {PERSON} ({EMAIL}), téléphone {PHONE}.",
        "La carte {CREDIT_CARD} de {PERSON} a été refusée.",
        "La clé {SECRET} a été publiée par {PERSON}.",
    ],
    "es": [
        "Por favor contacte a {PERSON} en {EMAIL} o al {PHONE}.",
        "Transferencia al IBAN {IBAN}, titular {PERSON}.",
        "Acceso desde {IP_ADDRESS} en la cuenta de {PERSON}.",
        "Resume el caso de {PERSON} ({EMAIL}), teléfono {PHONE}.",
        "La tarjeta {CREDIT_CARD} de {PERSON} fue rechazada.",
        "La clave {SECRET} la subió {PERSON} al repositorio.",
    ],
    "it": [
        "Contattare {PERSON} all'indirizzo {EMAIL} o al numero {PHONE}.",
        "Bonifico sull'IBAN {IBAN}, intestato a {PERSON}.",
        "Accesso da {IP_ADDRESS} per l'utente {PERSON}.",
        "Riassumi la richiesta di {PERSON} ({EMAIL}), telefono {PHONE}.",
        "La carta {CREDIT_CARD} di {PERSON} è stata rifiutata.",
        "La chiave {SECRET} è stata pubblicata da {PERSON}.",
    ],
    "nl": [
        "Neem contact op met {PERSON} via {EMAIL} of bel {PHONE}.",
        "Overmaken naar IBAN {IBAN} ten name van {PERSON}.",
        "Inlog vanaf {IP_ADDRESS} voor het account van {PERSON}.",
        "Vat de klacht van {PERSON} samen ({EMAIL}), telefoon {PHONE}.",
        "De creditcard {CREDIT_CARD} van {PERSON} is geweigerd.",
        "De sleutel {SECRET} is gepubliceerd door {PERSON}.",
    ],
}
US_ONLY = [
    "Employee {PERSON}, SSN {US_SSN}, start date next Monday.",
    "Verify the applicant: {PERSON}, social security number {US_SSN}, phone {PHONE}.",
]


def _phone(fake: Faker, region: str) -> str:
    for _ in range(200):
        number = fake.phone_number()
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(number, region)):
                return str(number)
        except phonenumbers.NumberParseException:
            continue
    raise RuntimeError(f"no valid {region} phone number from Faker")


def _person(fake: Faker) -> str:
    """First name and surname, skipping Faker list artefacts ("Bourgondië, van", "Koch II")."""
    while True:
        last = str(fake.last_name())
        words = last.split()
        plain = all((w[0].isupper() and not w.isupper()) or w in PARTICLES for w in words)
        if "," not in last and plain:
            return f"{fake.first_name()} {last}"


PARTICLES = {"van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "des", "la", "le",
             "ter", "ten", "zu", "y", "dos", "das", "do", "'t"}  # fmt: skip


def _card(fake: Faker, rng: random.Random) -> str:
    kind = rng.choice(["visa16", "mastercard", "amex", "discover", "jcb16", "diners"])
    number = str(fake.credit_card_number(card_type=kind))
    style = rng.choice(["bare", "spaced", "dashed"])
    if style == "bare" or len(number) != 16:
        return number
    sep = " " if style == "spaced" else "-"
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def _iban(fake: Faker, rng: random.Random) -> str:
    compact = str(fake.iban())
    if rng.random() < 0.5:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _ip(fake: Faker, rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.4:
        return str(fake.ipv4_public())
    if pick < 0.7:
        return str(fake.ipv4_private())
    if pick < 0.95:
        return str(fake.ipv6())
    return "127.0.0.1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _secret(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    kind = rng.choice(["aws", "github", "slack", "stripe", "jwt", "pem"])
    if kind == "aws":
        return "AKIA" + "".join(
            rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)
        )
    if kind == "github":
        return "ghp_" + "".join(rng.choice(alnum) for _ in range(36))
    if kind == "slack":
        digits = "".join(rng.choice(string.digits) for _ in range(12))
        return f"xoxb-{digits}-" + "".join(rng.choice(alnum) for _ in range(24))
    if kind == "stripe":
        return "sk_live_" + "".join(rng.choice(alnum) for _ in range(24))
    if kind == "jwt":
        header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
        payload = _b64url(json.dumps({"sub": rng.randint(1, 10**9)}).encode())
        return f"{header}.{payload}." + _b64url(rng.randbytes(32))
    body = base64.b64encode(rng.randbytes(120)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----"


def _fill(template: str, values: dict[str, Callable[[], str]]) -> tuple[str, list[dict[str, Any]]]:
    text = ""
    entities: list[dict[str, Any]] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        text += before
        value = values[slot]()
        entities.append({"type": slot, "value": value, "start": len(text)})
        text += value
    return text + rest, entities


def generated(rng: random.Random, noise: list[Callable[[], str]]) -> list[dict[str, Any]]:
    """Template sentences; every other one gets a hard-negative sentence after it, so that
    precision is measured next to dates, versions and order numbers, not on clean text."""
    cases: list[dict[str, Any]] = []
    for locale, (region, lang) in LOCALES.items():
        fake = Faker(locale)
        fake.seed_instance(SEED)
        us = Faker("en_US")
        us.seed_instance(SEED)
        values: dict[str, Callable[[], str]] = {
            "PERSON": lambda f=fake: _person(f),
            "EMAIL": lambda f=fake: str(rng.choice([f.email, f.free_email, f.company_email])()),
            "PHONE": lambda f=fake, r=region: _phone(f, r),
            "IBAN": lambda f=fake: _iban(f, rng),
            "CREDIT_CARD": lambda f=fake: _card(f, rng),
            "IP_ADDRESS": lambda f=fake: _ip(f, rng),
            "SECRET": lambda: _secret(rng),
            "US_SSN": lambda u=us: str(u.ssn()),
        }
        templates = TEMPLATES[lang] + (US_ONLY if locale == "en_US" else [])
        for i in range(PER_LOCALE):
            text, entities = _fill(templates[i % len(templates)], values)
            if i % 2:
                text += " " + noise[i // 2 % len(noise)]()
            cases.append(
                {"id": f"{locale}-{i:03d}", "kind": "pii", "text": text, "entities": entities}
            )
    return cases


# Hand-written PII cases: (text, [(type, exact substring), ...]).
HAND: list[tuple[str, list[tuple[str, str]]]] = [
    ("My SSN is 123456789, please keep it safe.", [("US_SSN", "123456789")]),
    ("ssn: 078 05 1120", [("US_SSN", "078 05 1120")]),
    ("Call me: 5552368 won't work, try 2025550143.", [("PHONE", "2025550143")]),
    ("Tel.: +49 (0)30 901820-0", [("PHONE", "+49 (0)30 901820")]),
    ("Ring 020 7946 0958 before noon", [("PHONE", "020 7946 0958")]),
    (
        "WhatsApp +33 6 12 34 56 78 ou 06.12.34.56.78",
        [("PHONE", "+33 6 12 34 56 78"), ("PHONE", "06.12.34.56.78")],
    ),
    ("US office: +1 (415) 555-2671 x204", [("PHONE", "+1 (415) 555-2671 x204")]),
    ("Móvil 612 34 56 78, fijo 912 345 678", [("PHONE", "612 34 56 78"), ("PHONE", "912 345 678")]),
    ("Cell: 98765 43210 (India)", [("PHONE", "98765 43210")]),
    ("numero 333 123 4567", [("PHONE", "333 123 4567")]),
    ("bel me op 06 12345678", [("PHONE", "06 12345678")]),
    ("Amex 3782 822463 10005 expires 04/27", [("CREDIT_CARD", "3782 822463 10005")]),
    ("pay with 4111-1111-1111-1111 now", [("CREDIT_CARD", "4111-1111-1111-1111")]),
    ("card 5555555555554444", [("CREDIT_CARD", "5555555555554444")]),
    ("IBAN: GB82 WEST 1234 5698 7654 32.", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
    ("send to FR1420041010050500013M02606", [("IBAN", "FR1420041010050500013M02606")]),
    ("NL91ABNA0417164300 is the account", [("IBAN", "NL91ABNA0417164300")]),
    ("ssh admin@10.0.0.1 -p 2222", [("IP_ADDRESS", "10.0.0.1")]),
    ("server at 172.16.254.1:8443 is down", [("IP_ADDRESS", "172.16.254.1")]),
    (
        "block 203.0.113.0/24 and 198.51.100.7",
        [("IP_ADDRESS", "203.0.113.0"), ("IP_ADDRESS", "198.51.100.7")],
    ),
    (
        "listen on ::1 and fe80::1ff:fe23:4567:890a",
        [("IP_ADDRESS", "::1"), ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a")],
    ),
    ("mapped ::ffff:192.0.2.128 too", [("IP_ADDRESS", "::ffff:192.0.2.128")]),
    ("Mail Jürgen at jürgen.müller@beispiel.de", [("EMAIL", "jürgen.müller@beispiel.de")]),
    ("<john.o'reilly+tag@mail.example.co.uk>", [("EMAIL", "john.o'reilly+tag@mail.example.co.uk")]),
    ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", [("SECRET", "AKIAIOSFODNN7EXAMPLE")]),
    ("DB_PASSWORD=Tr0ub4dor&3", [("SECRET", "Tr0ub4dor&3")]),
    ('{"password": "correct horse battery staple"}', [("SECRET", "correct horse battery staple")]),
    ("api_key: 9f8e7d6c5b4a39281706f5e4d3c2b1a0", [("SECRET", "9f8e7d6c5b4a39281706f5e4d3c2b1a0")]),
    (
        "curl -H 'Authorization: Bearer ya29.a0AfH6SMBx3dLq9Kz8p7Vw' https://api",
        [("SECRET", "ya29.a0AfH6SMBx3dLq9Kz8p7Vw")],
    ),
    (
        "token=ghs_16C7e42F292c6912E7710c838347Ae178B4a and more",
        [("SECRET", "ghs_16C7e42F292c6912E7710c838347Ae178B4a")],
    ),
    (
        "slack xoxp-1234567890-1234567890-abcdefABCDEF1234",
        [("SECRET", "xoxp-1234567890-1234567890-abcdefABCDEF1234")],
    ),
    (
        "OPENAI_API_KEY=sk-proj-4fGh7JkL9mNpQrStUvWxYz0123456789abcd",
        [("SECRET", "sk-proj-4fGh7JkL9mNpQrStUvWxYz0123456789abcd")],
    ),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", [("SECRET", "dXNlcjpwYXNzd29yZA==")]),
    ("My name is Zorblax Quintavius and I need help.", [("PERSON", "Zorblax Quintavius")]),
    ("Dear Ms. Okonkwo, thank you for your letter.", [("PERSON", "Okonkwo")]),
    ("Kind regards,\nSiobhan", [("PERSON", "Siobhan")]),
    ("Dr Priya Raghunathan will call back.", [("PERSON", "Priya Raghunathan")]),
    ("Ask Mr. O'Connor about it.", [("PERSON", "O'Connor")]),
    (
        "Meeting notes from Jean-Pierre Dupont and Anna-Lena Schmidt.",
        [("PERSON", "Jean-Pierre Dupont"), ("PERSON", "Anna-Lena Schmidt")],
    ),
    ("Signed, Hiroshi Tanaka", [("PERSON", "Hiroshi Tanaka")]),
    ("Hello Emma, your order shipped.", [("PERSON", "Emma")]),
    ("Contact Ludwig van Beethoven's estate", [("PERSON", "Ludwig van Beethoven")]),
    ("Sincerely,\nMaria Garcia", [("PERSON", "Maria Garcia")]),
    ("Je m'appelle Amélie Poulain.", [("PERSON", "Amélie Poulain")]),
    ("Ich heiße Lukas Becker und wohne in Köln.", [("PERSON", "Lukas Becker")]),
    ("Will Smith and Mark Taylor joined.", [("PERSON", "Will Smith"), ("PERSON", "Mark Taylor")]),
    ("employee id E-204981 belongs to Olivia Brown", [("PERSON", "Olivia Brown")]),
]

# Hand-written texts that must come out untouched.
HAND_NEGATIVES = [
    "Upgrade from version 1.2.3.4 to v10.4.1.2 before Friday.",
    "Python 3.11.4 and Node 20.10.0 are installed; run pip 24.0.",
    "The meeting is on 2024-03-15 at 14:30:00 UTC, or 15/03/2024 in EU format.",
    "Request id 123e4567-e89b-12d3-a456-426614174000 failed with HTTP 502.",
    "ISBN 978-3-16-148410-0 and ISBN-10 0-306-40615-2 are both cited.",
    "Order #4111111111111112 has not shipped (order 1234567890123456 neither).",
    "The Eiffel Tower is at 48.8584, 2.2945 and Big Ben at 51.5007, -0.1246.",
    "Total: $1,234,567.89 or 1.234.567,89 EUR, about ¥ 180 000 000.",
    "Deploy commit 3f9a1c2b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a to build 20240315.1.",
    "Listen on port 8443, fall back to 8080, then 3000.",
    "Status codes 200, 301, 404, 429 and 503 are retried differently.",
    "Compute 3.14159265358979 * 2 = 6.28318530717958 and 2^31 - 1 = 2147483647.",
    "The New York Times and The Washington Post both covered it.",
    "May the Force be with you, said the Senior Software Engineer.",
    "Spring Boot, Apache Kafka and Google Cloud Platform are in the stack.",
    "def get_password(user):\n    return vault.read(user.password_key)",
    "password = os.environ['DB_PASSWORD']  # never hard-code it",
    "The token: the smallest unit the model reads.",
    "Set secret: ${VAULT_SECRET} in the chart values.",
    "timestamp 1710513000 epoch, 1710513000123 ms",
    "std::vector<int> v; auto it = v.begin(); a::b::c();",
    "rgb(255, 128, 0) and #ff8800 are the same orange.",
    "The sk-learn-compatible-estimators wrapper is in scikit.",
    "Use the bearer of this letter as contact.",
    "Product Manager, Head of Sales, Chief Executive Officer.",
    "Chapter 12.4.2.1 explains section 3.2.",
    "Coordinates (lat, lon): -33.86882, 151.20930",
    "Matrix [[1, 2, 3], [4, 5, 6], [7, 8, 9]] has rank 2.",
    "Released on 03.04.2024, patch 10.0.19045.3803 for Windows.",
    "Call the function twice; reach the end of the list.",
    "Walk from Victoria Station to Charlotte Street, then Virginia Beach next year.",
    "Georgia Tech beat Santa Clara; the Jordan River flows south.",
    "The Lincoln Memorial and Washington Square Park are on the tour.",
    "Amazon Web Services, Microsoft Azure and Oracle Cloud compete.",
    "Grace Period ends on Monday; Summer Sale starts in June.",
    "Use Visual Studio Code with the Black formatter and Rust Analyzer.",
    "Christian Democratic Union and Social Democratic Party formed a coalition.",
    "Hi Team, Dear Customer, Hello World, Thanks Everyone.",
    "Call 911 in an emergency or 112 in Europe.",
    "The PIN is four digits; the CVV three.",
    "Account 00012345678 was merged into 00087654321.",
    "Q3 revenue grew 12.5% to 4.2 billion on 1,234,567 units.",
    "Dimensions 1920x1080, 3840 x 2160 and 2560-1440 pixels.",
]


def noise_makers(rng: random.Random) -> list[Callable[[], str]]:
    """Sentences with numbers and capitalised words that are not PII."""
    fake = Faker("en_US")
    fake.seed_instance(SEED)

    def bad_luhn() -> str:
        while True:
            number = "4" + "".join(rng.choice(string.digits) for _ in range(15))
            total = sum(
                (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
                for i, d in enumerate(int(c) for c in reversed(number))
            )
            if total % 10:
                return number

    return [
        lambda: f"Released version {rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}.",
        lambda: f"Build v{rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 999)} is out.",
        lambda: f"Invoice dated {fake.date()} is overdue.",
        lambda: f"Logged at {fake.iso8601()} by the worker.",
        lambda: f"Trace {fake.uuid4()} took {rng.randint(1, 999)} ms.",
        lambda: f"Cited ISBN {fake.isbn13()}.",
        lambda: f"Commit {fake.sha1()} reverted {fake.sha1()[:7]}.",
        lambda: f"Order number {bad_luhn()} is delayed.",
        lambda: f"Location {fake.latitude()}, {fake.longitude()} reported.",
        lambda: f"The price is {fake.pricetag()} before tax.",
        lambda: f"Service on localhost:{rng.randint(1024, 65535)} returned 404.",
        lambda: f"{rng.randint(2, 999)} * {rng.randint(2, 999)} = {rng.randint(1000, 999999)}.",
        lambda: f"Meeting at {fake.time()} on {fake.day_of_week()}, {fake.month_name()}.",
        lambda: f"{fake.catch_phrase()} for {fake.bs()}.",
        lambda: f"Ticket ORD-{rng.randint(10**7, 10**8)}-{rng.randint(1000, 9999)} was closed.",
        lambda: f"Ship to {fake.city()}, {fake.state()} via {fake.company()}.",
        lambda: (
            f"Unix time {rng.randint(10**9, 2 * 10**9)} and {rng.randint(10**12, 2 * 10**12)} ms."
        ),
        lambda: f"Batch {rng.randint(10**6, 10**7)} of {rng.randint(10**6, 10**7)} rows done.",
    ]


def negatives(noise: list[Callable[[], str]]) -> list[dict[str, Any]]:
    cases = [
        {"id": f"neg-hand-{i:03d}", "kind": "negative", "text": text, "entities": []}
        for i, text in enumerate(HAND_NEGATIVES)
    ]
    for i in range(NEGATIVES - len(HAND_NEGATIVES)):
        text = noise[i % len(noise)]()
        cases.append({"id": f"neg-gen-{i:03d}", "kind": "negative", "text": text, "entities": []})
    return cases


def hand() -> list[dict[str, Any]]:
    cases = []
    for i, (text, labels) in enumerate(HAND):
        entities = []
        pos = 0
        for entity, value in labels:
            start = text.index(value, pos)
            entities.append({"type": entity, "value": value, "start": start})
            pos = start + len(value)
        cases.append({"id": f"hand-{i:03d}", "kind": "pii", "text": text, "entities": entities})
    return cases


def main() -> None:
    rng = random.Random(SEED)
    noise = noise_makers(rng)
    cases = generated(rng, noise) + hand() + negatives(noise)
    with OUT.open("w", encoding="utf-8") as out:
        for case in cases:
            out.write(json.dumps(case, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
