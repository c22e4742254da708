"""SECRET candidates: known token shapes, ``Bearer``/``Basic`` credentials and the value of
``password=`` style assignments (private-key blocks: :mod:`.pii_keys`)."""

from __future__ import annotations

import re

from smesh.extproc.guards.pii_scan import Scan, word_char

__all__ = ["AWS_PREFIXES", "SECRET_PATTERNS", "TOKEN_PREFIXES", "SecretChecks"]

# --- Candidate patterns (RE2 syntax, UTF-8 bytes). ------------------------------------------
TOKEN_PREFIXES = ("eyJ", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox",
                  "sk_", "rk_", "sk-", "AIza")  # fmt: skip
AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA")
_STRONG_KEYS = r"password|passwd|pwd|passphrase|passcode|api[_\-]?key|apikey|secret[_\-]?key|client[_\-]?secret|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|private[_\-]?key"  # noqa: E501
_WEAK_KEYS = r"token|secret|pass"
SECRET_PATTERNS = (
    r"-----(?:BEGIN|END) (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY-----",
    "(?:" + "|".join(AWS_PREFIXES) + ")[A-Z0-9]{16}",
    r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    r"[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",
    r"sk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_\-]{20,}",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
    rf"(?i:(?:{_STRONG_KEYS}|{_WEAK_KEYS})[\"']?[ \t]{{0,3}}[:=])",
    r"(?i:bearer[ \t]{1,3}[A-Za-z0-9._~+/=\-]{16,}|authorization:[ \t]{0,3}basic[ \t]{1,3}[A-Za-z0-9+/=]{8,})",  # noqa: E501
)

# --- Python-side helpers: all anchored or bounded, so each runs in linear time. ------------
_QUOTED_OR_BARE_VALUE = re.compile(
    r"""[ \t]{0,3}(?:"([^"\n]{1,64})"|'([^'\n]{1,64})'|([^\s"'`,;<>()\[\]{}]{1,512}))"""
)
_STRONG_KEY = re.compile(rf"(?i)(?:{_STRONG_KEYS})")
_NOT_SECRETS = frozenset(
    ("null", "none", "nil", "true", "false", "undefined", "required", "optional", "string",
     "str", "int", "bool", "text", "password", "secret", "token", "empty", "redacted", "hidden")
)  # fmt: skip


class SecretChecks(Scan):
    """Validates token, credential and assignment candidates."""

    __slots__ = ()

    def token(self, start: int, end: int, chunk: str) -> None:
        prev = self.before(start)
        if word_char(prev) or prev == "-":
            return
        if chunk[:4] in AWS_PREFIXES and word_char(self.after(end)):
            return
        if chunk.startswith("sk-"):
            body = chunk[3:]
            if not (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)):
                return  # "sk-learn-compatible-estimators" is a phrase, not a key
        self.emit("SECRET", start, end)

    def auth(self, start: int, end: int, chunk: str) -> None:
        if word_char(self.before(start)):
            return
        token_at = max(chunk.rfind(" "), chunk.rfind("\t")) + 1
        self.emit("SECRET", start + token_at, end)

    def assignment(self, start: int, end: int, chunk: str) -> None:
        """``password=...``: the value is the secret; the key stays readable."""
        prev = self.before(start)
        if prev.isalnum() and not (prev.islower() and chunk[0].isupper()):
            return  # "bypass=" is not "pass=", but "dbPassword=" is a password
        m = _QUOTED_OR_BARE_VALUE.match(self.text, end)
        if m is None:
            return
        group = 1 if m.group(1) is not None else 2 if m.group(2) is not None else 3
        value = m.group(group)
        if group == 3 and self.after(m.end(3)) in "(.[":
            return  # a call or attribute in code: password = get_password()
        if value.lower() in _NOT_SECRETS or len(set(value)) == 1 or value[0] in "$%<{":
            return
        weak = _STRONG_KEY.fullmatch(chunk.rstrip(":= \t\"'")) is None
        if weak and chunk.endswith(":"):  # "secret=..." is code; "Secret: ..." may be prose
            looks_random = any(c.isdigit() for c in value) or not value.isalnum()
            if len(value) < 6 or not (looks_random or value != value.lower()):
                return  # "token: the" in prose; "token: a1b2c3d4" is a secret
        self.emit("SECRET", m.start(group), m.end(group))
