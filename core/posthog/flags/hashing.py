"""Deterministic bucketing hashes (spec §6.6).

``hash(key, value, salt)`` is the first 15 hex digits (60 bits) of
``sha1(f"{key}.{value}{salt}")`` divided by ``2**60 - 1``.  The first 60 bits are
read straight from the digest bytes (8 bytes shifted right by 4), which is the
same number as parsing the hex prefix, only cheaper.
"""

from __future__ import annotations

from hashlib import sha1
from struct import Struct

SCALE = float(0xFFFFFFFFFFFFFFF)  # 2**60 - 1
# The first 8 digest bytes as a big-endian integer; ``>> 4`` keeps the first 60 bits.
read_prefix = Struct(">Q").unpack_from


def hash_text(text: str) -> float:
    """The bucketing float for an already-assembled hash input."""
    prefix: int = read_prefix(sha1(text.encode("utf-8")).digest())[0]
    return (prefix >> 4) / SCALE


def hash_value(key: str, value: object, salt: str = "") -> float:
    """``hash(key, value, salt)`` of spec §6.6, in ``[0, 1]``."""
    return hash_text(f"{key}.{value}{salt}")


def holdout_hash(value: object) -> float:
    """The holdout bucket: sha1 of ``"holdout-<value>"`` (key ``holdout``, separator ``-``)."""
    return hash_text(f"holdout-{value}")


def sha1_prefix(key: str, value: object, salt: str = "") -> str:
    """The 15 hex digits the hash is built from (handy for checking vectors)."""
    return sha1(f"{key}.{value}{salt}".encode()).hexdigest()[:15]
