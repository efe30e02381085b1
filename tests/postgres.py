"""A throwaway PostgreSQL server on loopback for tests: initdb into a temporary folder, start it on a free
port with its socket in that folder, create one database, and remove everything afterwards.

The server binaries come from the Debian package `postgresql` (.ci/run installs it); Debian keeps them in
/usr/lib/postgresql/<version>/bin, off PATH. PostgreSQL refuses to run as root, so as root the server runs
as the `postgres` user (created by the package), or `nobody` when that user is missing."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
INSTALL_HINT = "install the Debian package postgresql (apt-get install -y postgresql; .ci/run does this)"


def server_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl, postgres and createdb: pg_ctl's on PATH, else Debian's newest."""
    pg_ctl = shutil.which("pg_ctl")
    candidates = [Path(pg_ctl).resolve().parent] if pg_ctl else []
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: [int(n) for n in p.parent.name.split(".") if n.isdigit()])[
        ::-1
    ]
    for folder in candidates:
        if all((folder / program).is_file() for program in SERVER_PROGRAMS):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists to run PostgreSQL")


@contextlib.contextmanager
def running_postgres(database: str = "sweeps", user: str = "sft") -> Iterator[str]:
    """Start a server, create `database` owned by `user` (with a random password, required over TCP),
    yield its URL postgresql://user:password@127.0.0.1:port/database, then stop it and delete its files."""
    bindir = server_bindir()
    if bindir is None:
        raise FileNotFoundError(f"PostgreSQL server programs {SERVER_PROGRAMS} not found; {INSTALL_HINT}")
    owner = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="sft-postgres-"))
    data, log_file, password_file = folder / "data", folder / "server.log", folder / "password"
    password = secrets.token_hex(12)
    password_file.write_text(password + "\n")
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    as_owner = ["runuser", "-u", owner.pw_name, "--"] if owner is not None else []

    def run(*command: str) -> None:
        result = subprocess.run(
            [*as_owner, *command], capture_output=True, text=True, timeout=120, cwd=folder
        )
        if result.returncode != 0:
            server_log = log_file.read_text(errors="replace") if log_file.is_file() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}{server_log}")

    port = free_port()
    run(
        str(bindir / "initdb"),
        f"--pgdata={data}",
        f"--username={user}",
        f"--pwfile={password_file}",
        "--auth-local=trust",  # the socket in `folder` is reachable only by its owner
        "--auth-host=scram-sha-256",  # TCP clients (the sweep workers) need the password
        "--encoding=UTF8",
        "--no-locale",  # the C locale exists everywhere; a missing system locale would stop initdb
        "--no-sync",
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=100"
    run(
        str(bindir / "pg_ctl"),
        "start",
        "--wait",
        "--timeout=60",
        f"-D{data}",
        f"-l{log_file}",
        f"-o{options}",
    )
    try:
        run(str(bindir / "createdb"), "-h", str(folder), "-p", str(port), "-U", user, database)
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "stop", "--mode=immediate", "--wait", f"-D{data}")
        shutil.rmtree(folder, ignore_errors=True)
