"""The sandbox's key material, generated on first start under ``{stack_dir}/sandbox-pay/``.

Files (all mode 0600, folder 0700; regenerated only if deleted):

- ``platform_private_key.pem``: signs responses and notifications (sandbox only)
- ``platform_public_key.pem``: what the merchant verifies them with
- ``merchant_private_key.pem``: the platform's ``apiclient_key.pem``, signs requests
- ``merchant_public_key.pem``: what the sandbox verifies requests with
- ``apiv3_key``: the 32-character APIv3 key (AES-256-GCM of resources)
- ``identity.json``: mchid, appid, merchant serial, platform public-key id
- ``merchant.json``: a ``WechatPayConfig`` for the platform, rewritten at every
  start because it carries the sandbox's current base URL
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Final

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from parking.payments.providers.wechat import WechatPayConfig

PLATFORM_PRIVATE: Final = "platform_private_key.pem"
PLATFORM_PUBLIC: Final = "platform_public_key.pem"
MERCHANT_PRIVATE: Final = "merchant_private_key.pem"
MERCHANT_PUBLIC: Final = "merchant_public_key.pem"
API_V3_KEY: Final = "apiv3_key"
IDENTITY: Final = "identity.json"
MERCHANT_CONFIG: Final = "merchant.json"
#: The official account's AppSecret (网页授权's token exchange).
APP_SECRET: Final = "app_secret"  # noqa: S105 - the file's name


class Identity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mchid: str
    appid: str
    merchant_serial: str
    platform_public_key_id: str


class SandboxKeys:
    def __init__(
        self,
        *,
        identity: Identity,
        platform_private_key: RSAPrivateKey,
        merchant_public_key: RSAPublicKey,
        api_v3_key: bytes,
        app_secret: str = "",
    ) -> None:
        self.identity = identity
        self.platform_private_key = platform_private_key
        self.merchant_public_key = merchant_public_key
        self.api_v3_key = api_v3_key
        self.app_secret = app_secret


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: never world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def _pem_private(key: RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _generate(folder: Path) -> None:
    platform = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alphabet = string.ascii_letters + string.digits
    identity = Identity(
        mchid="19" + "".join(secrets.choice(string.digits) for _ in range(8)),
        appid="wx" + secrets.token_hex(8),
        merchant_serial=secrets.token_hex(20).upper(),
        platform_public_key_id="PUB_KEY_ID_"
        + "".join(secrets.choice(string.digits) for _ in range(28)),
    )
    _write_private(folder / PLATFORM_PRIVATE, _pem_private(platform))
    _write_private(folder / PLATFORM_PUBLIC, _pem_public(platform.public_key()))
    _write_private(folder / MERCHANT_PRIVATE, _pem_private(merchant))
    _write_private(folder / MERCHANT_PUBLIC, _pem_public(merchant.public_key()))
    _write_private(
        folder / API_V3_KEY, "".join(secrets.choice(alphabet) for _ in range(32)).encode()
    )
    # Written last: its presence means every other file is complete.
    _write_private(folder / IDENTITY, msgspec.json.encode(identity))


def ensure(folder: Path, *, base_url: str, provider: str = "wechat") -> SandboxKeys:
    """Load the keys, generating them on first start; write ``merchant.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    if not (folder / IDENTITY).exists():
        _generate(folder)
    if not (folder / APP_SECRET).exists():  # folders made before 网页授权 was spoken
        _write_private(folder / APP_SECRET, secrets.token_hex(16).encode())
    identity = msgspec.json.decode((folder / IDENTITY).read_bytes(), type=Identity)
    platform = serialization.load_pem_private_key(
        (folder / PLATFORM_PRIVATE).read_bytes(), password=None
    )
    merchant = serialization.load_pem_public_key((folder / MERCHANT_PUBLIC).read_bytes())
    if not isinstance(platform, RSAPrivateKey) or not isinstance(merchant, RSAPublicKey):
        raise ValueError(f"the keys in {folder} are not RSA keys")
    config = WechatPayConfig(
        provider=provider,
        base_url=base_url,
        mchid=identity.mchid,
        appid=identity.appid,
        merchant_serial=identity.merchant_serial,
        merchant_private_key_path=str((folder / MERCHANT_PRIVATE).resolve()),
        platform_public_key_id=identity.platform_public_key_id,
        platform_public_key_path=str((folder / PLATFORM_PUBLIC).resolve()),
        api_v3_key_path=str((folder / API_V3_KEY).resolve()),
        mandate_page_url=f"{base_url}/sandbox/mandates/authorize",
        oauth_authorize_url=f"{base_url}/connect/oauth2/authorize",
        oauth_token_url=f"{base_url}/sns/oauth2/access_token",
        app_secret_path=str((folder / APP_SECRET).resolve()),
    )
    _write_private(
        folder / MERCHANT_CONFIG, msgspec.json.format(msgspec.json.encode(config), indent=2)
    )
    return SandboxKeys(
        identity=identity,
        platform_private_key=platform,
        merchant_public_key=merchant,
        api_v3_key=(folder / API_V3_KEY).read_bytes().strip(),
        app_secret=(folder / APP_SECRET).read_text().strip(),
    )
