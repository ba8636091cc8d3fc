"""Symmetric encryption (Sesam ``dtl-functions-encryption.rst``: ``encrypt``/``decrypt``).

Each value is encrypted on its own, as its transit JSON, with Fernet (AES-128-CBC + HMAC-SHA256,
the ``cryptography`` package) under a key derived from the KEY string (SHA-256 of its UTF-8).
Tokens are strings; ``decrypt`` gives back the original values, and drops tokens that were not
made with this key. A list input gives a list. Sesam does not specify the ciphertext, so tokens
are only readable by Sluice.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from runtime.dtl.functions import first, function
from runtime.dtl.functions.json import to_json
from runtime.dtl.values import decode, encode


def _fernet(key: Any) -> Fernet:
    digest = hashlib.sha256(str(first(key)).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _decrypt(fernet: Fernet, token: Any) -> Any:
    if not isinstance(token, str):
        return None
    try:
        return (decode(json.loads(fernet.decrypt(token.encode()))),)
    except InvalidToken:
        return None


@function("encrypt", min_args=2, max_args=2)
def encrypt(key: Any, values: Any) -> Any:
    """``[encrypt, KEY, VALUES]``: each non-null value as a Fernet token string."""
    fernet = _fernet(key)
    tokens = [fernet.encrypt(to_json(encode(v)).encode()).decode()
              for v in (values if isinstance(values, list) else [values]) if v is not None]
    return tokens if isinstance(values, list) else (tokens[0] if tokens else None)


@function("decrypt", min_args=2, max_args=2)
def decrypt(key: Any, values: Any) -> Any:
    """``[decrypt, KEY, VALUES]``: each token made by ``encrypt`` with KEY as its value."""
    fernet = _fernet(key)
    found = [r[0] for r in (_decrypt(fernet, t) for t in (values if isinstance(values, list) else [values]))
             if r is not None]
    return found if isinstance(values, list) else (found[0] if found else None)
