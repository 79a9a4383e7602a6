"""SSH sessions for the SFTP connector and the SFTP inbox: one way to connect, pin and log in.

`open_sftp(block, label)` connects to an SftpConnection block's server with TCP_NODELAY (with
Nagle on, paramiko's write pattern stalls ~40 ms per 30-100 KB file against OpenSSH), checks the
server's host key against the pinned one before anything else is sent, logs in with the private
key (then the password), and opens the SFTP subsystem. Errors: a host key mismatch or an
unloadable key is a PermanentError; refused credentials a CredentialsRefusedError; an unreachable
server, a failed handshake or a broken session a TransientError. Messages name the connection's
label and never hold a secret.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket

import paramiko

from blocks.sftp import SftpConnection, parse_host_key
from tasks.errors import (
    CredentialsRefusedError,
    PermanentError,
    RemoteError,
    TransientError,
)


def fingerprint(key: paramiko.PKey) -> str:
    """A host key's OpenSSH fingerprint, "SHA256:<base64>"."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _host_key_algorithms(keytype: str) -> list[str]:
    # A pinned RSA key is signed with rsa-sha2-*; paramiko no longer offers ssh-rsa (SHA-1).
    return ["rsa-sha2-512", "rsa-sha2-256"] if keytype == "ssh-rsa" else [keytype]


def _load_private_key(text: str, passphrase: str | None, label: str) -> paramiko.PKey:
    last: Exception | None = None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise PermanentError(f"{label}: private_key is encrypted: set private_key_passphrase on the connection") from None
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            last = exc
    detail = "wrong private_key_passphrase, or " if passphrase else ""
    raise PermanentError(
        f"{label}: cannot load private_key ({detail}not an ed25519, ECDSA or RSA key in PEM/OpenSSH format: "
        f"{type(last).__name__})"
    ) from None


def _authenticate(block: SftpConnection, transport: paramiko.Transport, label: str) -> None:
    where = f"{block.host}:{block.port}"
    failed = f"{label}: authentication failed for user {block.username} on {where}"
    try:
        if block.private_key is not None:
            passphrase = block.private_key_passphrase.get_secret_value() if block.private_key_passphrase else None
            pkey = _load_private_key(block.private_key.get_secret_value(), passphrase, label)
            try:
                transport.auth_publickey(block.username, pkey)
                return
            except paramiko.AuthenticationException:
                if block.password is None:
                    raise CredentialsRefusedError(f"{failed} (private key refused)") from None
        transport.auth_password(block.username, block.password.get_secret_value())
    except paramiko.BadAuthenticationType as exc:
        raise CredentialsRefusedError(f"{failed} (server allows only: {', '.join(exc.allowed_types)})") from None
    except paramiko.AuthenticationException:
        raise CredentialsRefusedError(f"{failed} (wrong password or key)") from None
    if not transport.is_authenticated():
        raise CredentialsRefusedError(failed)


def open_sftp(block: SftpConnection, label: str, sftp_class: type[paramiko.SFTPClient] = paramiko.SFTPClient):
    """(transport, SFTP client) of a new, logged-in session on the block's server; see the module docstring."""
    where = f"{block.host}:{block.port}"
    try:
        sock = socket.create_connection((block.host, block.port), timeout=block.connect_timeout)
    except OSError as exc:
        raise TransientError(f"{label}: cannot reach {where}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    ok = False
    try:
        transport.banner_timeout = block.connect_timeout
        transport.auth_timeout = block.connect_timeout
        pinned_type, pinned_fp = parse_host_key(block.host_key) if block.host_key else (None, None)
        if pinned_type and block.verify_host_key:
            opts = transport.get_security_options()
            wanted = [k for k in _host_key_algorithms(pinned_type) if k in opts.key_types]
            if not wanted:
                raise PermanentError(f"{label}: pinned host key type {pinned_type} is not supported")
            opts.key_types = wanted
        try:
            transport.start_client(timeout=block.connect_timeout)
        except paramiko.SSHException as exc:
            if pinned_type and "host key" in str(exc).lower():
                raise PermanentError(
                    f"{label}: host key mismatch for {where}: pinned {pinned_type} key {pinned_fp}, "
                    f"but the server offers no {pinned_type} host key. Connection refused; if the server's "
                    f"key really changed, update host_key on the connection"
                ) from None
            raise TransientError(f"{label}: SSH handshake with {where} failed: {exc}") from None
        key = transport.get_remote_server_key()
        actual = fingerprint(key)
        if block.verify_host_key and actual != pinned_fp:
            raise PermanentError(
                f"{label}: host key mismatch for {where}: pinned {pinned_fp}, server presented "
                f"{key.get_name()} {actual}. Connection refused; if the server's key really changed, "
                f"update host_key on the connection"
            )
        _authenticate(block, transport, label)
        chan = transport.open_session(timeout=block.connect_timeout)
        chan.settimeout(block.timeout)
        chan.invoke_subsystem("sftp")
        sftp = sftp_class(chan)
        ok = True
    except RemoteError:
        raise
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransientError(f"{label}: cannot open an SFTP session on {where}: {exc}") from None
    finally:
        if not ok:
            transport.close()
    return transport, sftp
