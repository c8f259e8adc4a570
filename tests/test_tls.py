"""Transport security: a wss hub with a certificate made here, shims and
operators that trust it (``ssl=`` or ``TOWER_CA``), and `serve` refusing a
non-loopback bind without TLS unless ``--insecure``."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent_shim import Shim
from towerctl.hub.server import Hub, HubConfig
from towerctl.operator import OperatorClient, OperatorError
from towerctl.tokens import create_token

from .test_cli_e2e import TOWERCTL, cli_env
from .test_control_path import shell
from .test_decision_signing import approve_next


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "towerctl test hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
async def wss_hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, dict[str, str], Path]]:
    cert, key = make_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    hub = Hub(
        HubConfig(
            host="127.0.0.1",
            port=0,
            db_path=tmp_path / "t.db",
            key_path=tmp_path / "t.key",
            ssl_context=server_ctx,
        )
    )
    await hub.start()
    assert hub.store is not None
    tokens = {
        "agent": await create_token(hub.store, role="agent", name="agent", envs=(), actor="test"),
        "admin": await create_token(hub.store, role="admin", name="alice", envs=(), actor="test"),
    }
    try:
        yield hub, tokens, cert
    finally:
        await hub.stop()


async def test_wss_roundtrip_with_trusted_cert(wss_hub: tuple[Hub, dict[str, str], Path]) -> None:
    hub, tokens, cert = wss_hub
    assert hub.url.startswith("wss://")
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with Shim(
        hub.url, tokens["agent"], agent="a", env="prod", ssl=client_ctx, hub_key=hub.public_key_hex
    ) as shim:
        assert shim.connected
        task = asyncio.create_task(shim.admit(shell("kubectl delete pod web-1")))
        await approve_next(hub, tokens["admin"], task, ssl=client_ctx)  # type: ignore[arg-type]
        approved = task.result()
        assert approved.decision is not None and approved.decision.signature


async def test_tower_ca_env_is_trusted(
    wss_hub: tuple[Hub, dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, tokens, cert = wss_hub
    monkeypatch.setenv("TOWER_CA", str(cert))
    async with OperatorClient(hub.url, tokens["admin"]) as op:
        assert op.name == "alice"
    async with Shim(hub.url, tokens["agent"], agent="a", env="dev") as shim:
        assert shim.connected


async def test_untrusted_cert_is_refused(
    wss_hub: tuple[Hub, dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, tokens, _ = wss_hub
    monkeypatch.delenv("TOWER_CA", raising=False)
    with pytest.raises(OperatorError):
        async with OperatorClient(hub.url, tokens["admin"], timeout=5):
            pass
    shim = Shim(hub.url, tokens["agent"], agent="a", env="dev", connect_timeout=1.0)
    await shim.start()
    try:
        assert not shim.connected
        assert "CERTIFICATE_VERIFY_FAILED" in shim.last_error or "certificate" in shim.last_error.lower()
    finally:
        await shim.close()


async def _serve(home: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *TOWERCTL,
        "serve",
        *args,
        env=cli_env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = ""
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            seen += line
            if not line or "listening on" in line:
                break
    finally:
        if proc.returncode is None and "listening on" in seen:
            proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 15)
    return code, seen


async def test_serve_refuses_public_bind_without_tls(tmp_path: Path) -> None:
    code, err = await _serve(tmp_path / "home", "--host", "0.0.0.0", "--port", "0")
    assert code == 2
    assert "without TLS" in err


async def test_serve_public_bind_with_insecure_starts(tmp_path: Path) -> None:
    code, err = await _serve(tmp_path / "home", "--host", "0.0.0.0", "--port", "0", "--insecure")
    assert "listening on ws://0.0.0.0:" in err
    assert code == 0


async def test_serve_with_tls_announces_wss(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    code, err = await _serve(
        tmp_path / "home", "--host", "0.0.0.0", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert "listening on wss://0.0.0.0:" in err
    assert code == 0
