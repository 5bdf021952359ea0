"""Which passwords a log-in may have: long enough, and not one an attacker tries first.

`weak(password, username)` answers why a password is refused, or None. The rules (docs/
admin_api.md, "Passwords"): at least PASSWORD_MIN characters; not only digits (a phone, ID or
student number); at least five different characters; not the user name, nor containing it;
and not a common password or a common word with digits and symbols around it
("Password123!", "woaini1314", "qwertyuiop"). The list is small on purpose: it holds what
guessing tools try first, not a dictionary.
"""

from __future__ import annotations

import string
from typing import Final

PASSWORD_MIN: Final = 10
PASSWORD_MAX: Final = 256

_COMMON_WORDS: Final = frozenset((
    "password", "passwort", "passw0rd", "p@ssw0rd", "p@ssword", "pass", "word", "qwerty",
    "qwertz", "azerty", "qwertyuiop", "asdfgh", "asdfghjkl", "zxcvbn", "zxcvbnm", "qazwsx",
    "qazwsxedc", "zaqxsw", "zaq1xsw2", "1qaz2wsx", "1q2w3e4r", "1q2w3e4r5t", "abc", "abcd",
    "abcdef", "abcdefg", "abcdefgh", "abcdefghij", "admin", "administrator", "root", "superuser",
    "sysadmin", "welcome", "letmein", "iloveyou", "loveyou", "woaini", "woaiwojia", "aini",
    "wangyu", "test", "tester", "testing", "guest", "user", "login", "default", "changeme",
    "change", "secret", "master", "monkey", "dragon", "sunshine", "princess", "football",
    "baseball", "basketball", "shadow", "superman", "batman", "trustno", "starwars", "whatever",
    "freedom", "hello", "hellokitty", "computer", "internet", "michael", "jennifer", "onecard",
    "card", "campus", "school", "student", "teacher", "canteen", "china", "beijing", "shanghai",
    "zhongguo",
))
"""Compared with the password lowercased and stripped of digits and symbols at both ends."""

_COMMON_PASSWORDS: Final = frozenset((
    "a1234567890", "aa1234567890", "abc1234567", "abcd123456", "abc123456789", "a123456789",
    "q1w2e3r4t5", "1q2w3e4r5t6y", "1qaz2wsx3edc", "qwe123qwe123", "qwerty123456", "1234qwerasdf",
    "asdf1234567", "iloveyou123", "iloveyou1234", "woaini1314520", "5201314woaini",
))

_EDGES: Final = string.digits + string.punctuation + " "


def weak(password: str, username: str = "") -> str | None:
    """Why `password` is refused for `username`, or None when it is acceptable."""
    if len(password) < PASSWORD_MIN:
        return f"at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"at most {PASSWORD_MAX} characters"
    lower = password.lower()
    if lower.isdigit():
        return "not digits only (a phone, ID or student number is guessed first)"
    if len(set(lower)) < 5:
        return "at least five different characters"
    if username and username.lower() in lower:
        return "not the user name, nor containing it"
    if lower in _COMMON_PASSWORDS or lower.strip(_EDGES) in _COMMON_WORDS:
        return "not a common password (guessing tools try it first)"
    return None
