"""One SuperNode per hospital: pilot credentials and a `submit` that fails when the run fails.

A deployment needs what a simulation does not: a TLS certificate the SuperNodes trust, and one
authentication key pair per site whose public half the operator registers with the SuperLink
(`flwr supernode register`), so that only registered hospitals can join. The helpers below write
throwaway pilot credentials with the `cryptography` package (no openssl or ssh-keygen needed); a
production federation uses its own PKI, and each site makes its own key pair and sends only the
public key. `radfl submit` wraps `flwr run`, because `flwr run` exits 0 even when the ServerApp
crashes: it follows the run and exits non-zero unless the run ends `finished:completed`.
docs/deployment.md has the whole pilot procedure.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import InputError
from simulations.flower import FlowerCLI, RunFailed, failure_reason, stop_tree

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# ---- credentials


def make_ca(
    *, common_name: str = "radfl pilot CA", days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that signs only the SuperLink's certificate; SuperNodes and the operator
    trust it through `--root-certificates` / `root-certificates`."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, hosts: tuple[str, ...] = (), days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS certificate. Its SAN holds localhost, 127.0.0.1 and `hosts` (names or IP
    addresses): a SuperNode checks that the host in its `--superlink` address is one of them."""
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in hosts:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_node_key() -> tuple[bytes, bytes]:
    """A SuperNode authentication key pair as (private, public) bytes: NIST P-384 in OpenSSH format,
    what `ssh-keygen -t ecdsa -b 384` writes. `flower-supernode --auth-supernode-private-key` loads
    the private half (unencrypted) and `flwr supernode register` the public half."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def write_pilot_credentials(out: Path, sites: list[str], *, hosts: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write ca.crt, server.crt, server.key and SITE.key / SITE.pub for each site into `out`.

    Never overwrites: a new certificate or key would silently invalidate the registered ones.
    The CA key is not kept; to add a host name, write a new folder and restart the SuperLink.
    """
    bad = [s for s in sites if not SITE_NAME.match(s)]
    if not sites or bad:
        raise InputError(f"site names must be letters, digits, '.', '_' or '-' (got {', '.join(bad) or 'none'})")
    if len(set(sites)) != len(sites):
        raise InputError("site names must be distinct")
    out = Path(out)
    files = {"ca": out / "ca.crt", "server-cert": out / "server.crt", "server-key": out / "server.key"}
    for site in sites:
        files[f"{site}-key"], files[f"{site}-pub"] = out / f"{site}.key", out / f"{site}.pub"
    existing = [str(p) for p in files.values() if p.exists()]
    if existing:
        raise InputError(f"{existing[0]} exists; choose a new folder (radfl pilot-certs never overwrites credentials)")
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    server_key, server_cert = make_server_cert(ca_key, ca_cert, hosts=hosts)
    pem = serialization.Encoding.PEM
    _write(files["ca"], ca_cert.public_bytes(pem))
    _write(files["server-cert"], server_cert.public_bytes(pem))
    _write(
        files["server-key"],
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        private=True,
    )
    for site in sites:
        private, public = make_node_key()
        _write(files[f"{site}-key"], private, private=True)
        _write(files[f"{site}-pub"], public)
    return files


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew between hosts
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Private keys are created 0600 from the start, never readable by others even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# ---- submit and follow a run on a deployed SuperLink


def flwr_home() -> Path:
    """The operator's Flower home: where `flwr` keeps its SuperLink connections (config.toml)."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def submit(
    app: str,
    connection: str | None,
    run_config: list[str],
    *,
    federation_config: str | None = None,
    timeout: float = 0,
    poll: float = 10.0,
    stream: bool = True,
    log_file: str | None = None,
) -> int:
    """`flwr run`, then follow the run to its end; return its id if it ended `finished:completed`.

    Raises RunFailed (or InputError, when the ServerApp rejected its input) with a one-line reason
    otherwise. `timeout` > 0 stops the run after that many seconds. Ctrl-C stops following, not the run.
    """
    if not (Path(app) / "pyproject.toml").is_file():
        raise InputError(f"{app} holds no pyproject.toml; give the Flower app's folder (the radfl repository)")
    cli = FlowerCLI(flwr_home(), connection)
    run_id = cli.submit(Path(app), run_config, federation_config)
    where = connection or "the default connection"
    print(f"submitted run {run_id} to {where}", flush=True)
    streamer = cli.stream_logs(run_id) if stream else None  # the log ends with the run; the status is checked apart
    try:
        status = cli.wait(run_id, timeout=timeout if timeout > 0 else float("inf"), poll=poll)
        if streamer is not None:
            try:
                streamer.wait(timeout=15)  # the last lines of the log
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        print(
            f"\nstopped following; run {run_id} goes on (`flwr stop {run_id} {connection or ''}` stops it)",
            file=sys.stderr,
        )
        raise
    finally:
        if streamer is not None:
            stop_tree(streamer, grace=5)
    logs = cli.logs(run_id) if (log_file or status != "finished:completed") else ""
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        Path(log_file).write_text(logs)
    if status == "finished:completed":
        print(f"run {run_id} finished:completed", flush=True)
        return run_id
    if status == "timeout":
        raise RunFailed(f"run {run_id} did not finish within {timeout:.0f} s and was stopped")
    reason = failure_reason(logs, cli.run_info(run_id).get("status-details", ""))
    if "InputError" in logs:
        raise InputError(f"run {run_id} ended {status}: {reason}")
    raise RunFailed(f"run {run_id} ended {status}: {reason}")


# ---- the `radfl` subcommands


def cmd_pilot_certs(args) -> int:
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    files = write_pilot_credentials(Path(args.out), sites, hosts=tuple(args.host))
    print(
        f"wrote {len(files)} files to {args.out}: ca.crt, server.crt, server.key and {', '.join(f'{s}.key/.pub' for s in sites)}"
    )
    print(
        "each site keeps only its SITE.key; register every SITE.pub with `flwr supernode register SITE.pub CONNECTION`"
    )
    return 0


def cmd_submit(args) -> int:
    submit(
        args.app,
        args.connection,
        args.run_config or [],
        federation_config=args.federation_config,
        timeout=args.timeout,
        poll=args.poll,
        stream=not args.quiet,
        log_file=args.log,
    )
    return 0


def add_deploy_arguments(subparsers) -> None:
    """`radfl pilot-certs` and `radfl submit` (see docs/deployment.md)."""
    certs = subparsers.add_parser(
        "pilot-certs", help="write a pilot CA, the SuperLink's TLS certificate and one key pair per site"
    )
    certs.add_argument(
        "--out", required=True, help="a new folder for ca.crt, server.crt, server.key, SITE.key and SITE.pub"
    )
    certs.add_argument("--sites", required=True, help="comma-separated site names, e.g. site-a,site-b,site-c")
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP address the SuperNodes use to reach the SuperLink (repeatable; "
        "localhost and 127.0.0.1 are always included)",
    )
    certs.set_defaults(func=cmd_pilot_certs)

    run = subparsers.add_parser(
        "submit", help="flwr run on a deployed SuperLink, follow it, exit non-zero unless it completed"
    )
    run.add_argument("app", nargs="?", default=".", help="the Flower app's folder (default: .)")
    run.add_argument(
        "connection",
        nargs="?",
        default=None,
        help="SuperLink connection in $FLWR_HOME/config.toml (default: its default connection)",
    )
    run.add_argument(
        "--run-config", "-c", action="append", help="as for flwr run: 'key=value ...' or a TOML file (repeatable)"
    )
    run.add_argument("--federation-config", default=None, help="as for flwr run")
    run.add_argument(
        "--timeout", type=float, default=0, help="stop the run after this many seconds (default: 0, no limit)"
    )
    run.add_argument("--poll", type=float, default=10.0, help="seconds between status checks (default: 10)")
    run.add_argument("--log", default=None, help="also write the run's whole log to this file")
    run.add_argument("--quiet", action="store_true", help="do not stream the run's log")
    run.set_defaults(func=cmd_submit)
