"""Hot reload of the mapping file: edit the YAML while playing, hear it within a second.

``MappingReloader(path, model, mapper)`` watches the file the Mapper plays from by
polling its ``stat`` (mtime, size, inode: cheap, portable, no dependency). On a change
it re-validates the whole file; a valid file is swapped in with
``Mapper.set_mapping`` (atomic, no audio gap, soft takeover re-armed), an invalid
one is refused with one warning line that says why, and the previous mapping stays in
force. ``reload_now()`` forces a reload (for SIGHUP).

Use it either from an existing control loop (``poll()`` now and then) or with its own
thread (``start()`` polls every ``interval`` seconds, 0.25 s by default). After a
program change switches to another mapping file, the reloader follows the Mapper and
watches that file, validated against the model the Mapper plays now.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from daemon.errors import CanneError
from daemon.mapping import load_mapping

__all__ = ["MappingReloader"]

log = logging.getLogger(__name__)


class MappingReloader:
    """Re-validate and swap a mapping when its file changes.

    Parameters
    ----------
    path : str or Path
        The mapping file (used until the Mapper's own mapping names a file).
    model : DecoderModel
        The model to validate against when no Mapper is given (otherwise the
        Mapper's current model).
    mapper : daemon.mapper.Mapper, optional
        Receives ``set_mapping(new)``.
    on_reload : callable(Mapping), optional
        Called instead of / besides the Mapper (tests, other consumers).
    interval : float
        Poll period of the ``start()`` thread, seconds.
    """

    def __init__(self, path, model=None, mapper=None, *, on_reload=None, interval: float = 0.25):
        self._path = Path(path).expanduser()
        self._model = model
        self._mapper = mapper
        self._on_reload = on_reload
        self.interval = float(interval)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watched = self.path
        self._sig = self._signature(self._watched)
        self._text = self._read(self._watched)
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ what to watch
    @property
    def path(self) -> Path:
        if self._mapper is not None:
            p = self._mapper.mapping.path
            if p is not None:
                return Path(p)
        return self._path

    @property
    def model(self):
        if self._mapper is not None and self._mapper.model is not None:
            return self._mapper.model
        return self._model

    @staticmethod
    def _signature(path: Path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    # ------------------------------------------------------------------ API
    def poll(self) -> bool:
        """Reload if the file changed since the last look; True when a new mapping was applied."""
        with self._lock:
            path = self.path
            if path != self._watched:  # a program change moved us to another file
                self._watched = path
                self._sig = self._signature(path)
                self._text = self._read(path)
                return False
            sig = self._signature(path)
            if sig == self._sig:
                return False
            self._sig = sig
            if sig is None:
                self._fail(path, "the file is gone (renamed or deleted?); keeping the current mapping")
                return False
            text = self._read(path)
            if text is not None and text == self._text:
                return False  # touched or rewritten identically: nothing to do
            return self._reload(path)

    def reload_now(self) -> bool:
        """Reload unconditionally (SIGHUP); True when a new mapping was applied."""
        with self._lock:
            path = self.path
            self._watched = path
            self._sig = self._signature(path)
            return self._reload(path)

    def start(self) -> "MappingReloader":
        """Poll in a daemon thread every ``interval`` seconds."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="canne-mapping-reload", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ internals
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # never let the watcher die
                log.warning("mapping watcher: %s", exc)

    def _fail(self, path: Path, why: str) -> None:
        self.failures += 1
        self.last_error = why
        log.warning("mapping %s not reloaded: %s", path, why)

    def _reload(self, path: Path) -> bool:
        self._text = self._read(path)
        try:
            new = load_mapping(path, self.model)
        except CanneError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.warning("mapping edit refused, keeping the previous mapping: %s", exc)
            return False
        if self._mapper is not None and not self._mapper.set_mapping(new, if_same_source=True):
            # a program change switched file or model while this one was validated:
            # it wins; the next poll watches what the Mapper plays now
            log.info("mapping %s not applied: a program change came first", path)
            return False
        if self._on_reload is not None:
            self._on_reload(new)
        self.reloads += 1
        self.last_error = None
        log.info("mapping reloaded: %s (%d controls)", path, len(new.controls))
        return True
