"""Pseudonymous user ids: HMAC-SHA256 with a secret key, computed inside Spark.

Raw user ids are replaced at ingestion, so they never reach the bronze ``events`` and
``users`` tables nor anything built from them. The key comes from an environment variable
(``privacy.key_env``) or a secret file (``privacy.key_file``); only the local environment
may fall back to the built-in development key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from recsys.config import Config, Env

DEV_KEY = b"recsys-local-development-key-not-secret"
_BLOCK = 64  # SHA-256 block size in bytes


from recsys.errors import PrivacyError  # noqa: F401,E402  (re-exported)


def resolve_key(cfg: Config) -> bytes:
    """The HMAC key: the file named in config, else the environment variable, else (local only) the dev key."""
    p = cfg.privacy
    if p.key_file:
        path = Path(p.key_file).expanduser()
        if not path.is_file():
            raise PrivacyError(f"config key 'privacy.key_file': secret file {path} does not exist")
        key = path.read_bytes().strip()
    else:
        key = os.environ.get(p.key_env, "").encode()
    if not key:
        if cfg.env is not Env.LOCAL:
            raise PrivacyError(
                f"no pseudonymisation key: set the environment variable {p.key_env} or privacy.key_file; "
                f"the built-in development key is refused outside env=local (env={cfg.env.value})"
            )
        key = DEV_KEY
    elif key == DEV_KEY and cfg.env is not Env.LOCAL:
        raise PrivacyError(f"the built-in development key is refused outside env=local (env={cfg.env.value})")
    return key


def pseudonymise(value: str, key: bytes) -> str:
    """HMAC-SHA256 of ``value`` as 64 hex characters (the reference for :func:`pseudonymise_col`)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymise_col(col: Column, key: bytes) -> Column:
    """The same HMAC-SHA256 as :func:`pseudonymise`, as a Spark expression (no Python UDF).

    HMAC(K, m) = H((K' xor opad) || H((K' xor ipad) || m)), K' = K zero-padded to the block
    (or hashed first when longer than a block).
    """
    k = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
    k = k.ljust(_BLOCK, b"\0")
    ipad = bytearray(b ^ 0x36 for b in k)
    opad = bytearray(b ^ 0x5C for b in k)
    inner = F.unhex(F.sha2(F.concat(F.lit(ipad), F.encode(col, "UTF-8")), 256))
    return F.when(col.isNull(), F.lit(None)).otherwise(F.sha2(F.concat(F.lit(opad), inner), 256))
