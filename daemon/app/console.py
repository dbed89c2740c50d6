"""The terminal: log records and the status line, never run into each other.

``canne run --status`` keeps one status line at the bottom of a terminal
(rewritten in place every second). A log record printed meanwhile would
otherwise be appended to the half-written status line. :class:`Console` is
the logging handler of every ``canne`` command and owns stderr: on a terminal
it clears the status line, writes the record on its own line and draws the
status line again, all under one lock (records come from several threads).
Each record also starts by clearing the line, so a status line left by
another process on the same terminal (the supervisor's child) is not run into
either. Off a terminal (journald, a pipe) every status line is a plain line.

Start-up: :meth:`Console.hold` keeps INFO/DEBUG records back until
:meth:`Console.release`; the instrument holds them until its stream runs, so a
start-up that fails prints its one ``ERROR`` line and nothing else.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["Console", "install", "get", "FORMAT"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CLEAR = "\r\x1b[2K"

_console: "Console | None" = None


class Console(logging.Handler):
    """Logging handler + status line on one stream (stderr by default)."""

    def __init__(self, stream=None, *, tty: bool | None = None, fmt: str = FORMAT) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            try:
                tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.setFormatter(logging.Formatter(fmt))
        self._status = ""
        self._held: list[str] | None = None

    # -- records --------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.acquire()
        try:
            if self._held is not None and record.levelno < logging.WARNING:
                self._held.append(msg)
                return
            self._write_line(msg)
        finally:
            self.release_lock()

    def release_lock(self) -> None:  # logging.Handler.release is the lock's; keep it readable
        logging.Handler.release(self)

    def _write_line(self, msg: str) -> None:
        try:
            if self.tty:
                self.stream.write(_CLEAR + msg + "\n" + self._status)
            else:
                self.stream.write(msg + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    # -- the status line ------------------------------------------------------------
    def status(self, line: str) -> None:
        """Show ``line`` as the status line (a plain line when not on a terminal)."""
        self.acquire()
        try:
            if self.tty:
                self._status = line
                self.stream.write(_CLEAR + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        finally:
            self.release_lock()

    def end_status(self) -> None:
        """Leave the status line where it is and move to a new line."""
        self.acquire()
        try:
            if self.tty and self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""
        except (OSError, ValueError):
            pass
        finally:
            self.release_lock()

    # -- start-up ---------------------------------------------------------------------
    def hold(self) -> None:
        """Keep INFO and DEBUG records back (warnings and errors still go out)."""
        self.acquire()
        try:
            if self._held is None:
                self._held = []
        finally:
            self.release_lock()

    def flush_held(self, *, show: bool = True) -> None:
        """Stop holding; write the held records (``show``) or drop them."""
        self.acquire()
        try:
            held, self._held = self._held, None
            if show and held:
                for msg in held:
                    self._write_line(msg)
        finally:
            self.release_lock()


def install(level: int | str = logging.INFO, stream=None) -> Console:
    """Make a :class:`Console` the root logger's only handler (replaces ``basicConfig``)."""
    global _console
    console = Console(stream)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(console)
    root.setLevel(level)
    _console = console
    return console


def get() -> "Console | None":
    """The installed console, if any."""
    return _console
