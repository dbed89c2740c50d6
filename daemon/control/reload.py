"""Hot reload of the mapping file: edit the YAML while playing, hear it within a second.

``MappingReloader(path, model, mapper)`` watches the file the Mapper plays from by
polling its ``stat`` (mtime, size, inode: cheap, portable, no dependency). On a change
it re-validates the whole file; a valid file is swapped in with
``Mapper.set_mapping`` (atomic, no audio gap, soft takeover re-armed), an invalid
one is refused with one warning line that says why, and the previous mapping stays in
force. ``reload_now()`` forces a reload (for SIGHUP).

Nothing here blocks the caller for more than a ``stat``: ``poll()`` is called from the
instrument's control loop (every 0.25 s), so

- a path that is not a regular file (a FIFO, ``/dev/zero``, a folder) or is larger
  than ``daemon.control.mapping.MAX_MAPPING_BYTES`` is refused from the ``stat`` alone, before
  anything opens it;
- reading and validating happen on a short-lived worker thread (``background=True``,
  the default); the next ``poll()`` applies the result on the caller's thread.
  ``wait_idle()`` waits for a validation in progress (tests, shutdown).
  ``background=False`` validates inline (simple scripts).

It has no polling thread of its own: the caller's loop calls ``poll()`` (the
instrument's control loop every ``daemon.app.runtime.RELOAD_POLL_S``). After a program
change switches to another mapping file, the reloader follows the Mapper and watches
that file, validated against the model the Mapper plays now.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from daemon.errors import CanneError, MappingError
from daemon.inputfile import check_stat, short_path
from daemon.control.mapping import MAX_MAPPING_BYTES, load_mapping_text, read_mapping_text

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
    mapper : daemon.control.mapper.Mapper, optional
        Receives ``set_mapping(new)``.
    background : bool
        Read and validate on a worker thread (default); ``poll()`` then only stats
        the file and applies finished validations. False: validate inside ``poll()``.
    """

    def __init__(self, path, model=None, mapper=None, *, background: bool = True):
        self._path = Path(path).expanduser()
        self._model = model
        self._mapper = mapper
        self.background = bool(background)
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._result = None  # (path, text, Mapping | None, error str | None) from the worker
        self._watched = self.path
        self._sig = self._signature(self._watched)
        self._text: str | None = None  # text of the file as last validated (touch = no reload)
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._force_pending = False  # SIGHUP while a validation runs: redo once it is done
        # remember the text, so touching the file is not a reload (the same guarded read
        # as a load: type and size checked first, never blocks, at most 1 MiB)
        try:
            self._text = read_mapping_text(self._watched)
        except CanneError:
            self._text = None

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
    def _stat(path: Path):
        try:
            return os.stat(path)
        except (OSError, ValueError):
            return None

    @classmethod
    def _signature(cls, path: Path):
        st = cls._stat(path)
        return None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)

    @property
    def busy(self) -> bool:
        """True while a validation runs on the worker thread."""
        return not self._idle.is_set()

    # ------------------------------------------------------------------ API
    def poll(self) -> bool:
        """Apply a finished validation, then look for a change; True when a new mapping was applied.

        Costs one ``stat`` (plus, with ``background=False``, the validation itself).
        """
        with self._lock:
            applied = self._collect()
            if self.busy:
                return applied  # one validation at a time; the next poll looks again
            if self._force_pending:
                self._force_pending = False
                return self._force() or applied
            path = self.path
            if path != self._watched:  # a program change moved us to another file
                self._watched = path
                self._sig = self._signature(path)
                self._text = None
                return applied
            sig = self._signature(path)
            if sig == self._sig:
                return applied
            self._sig = sig
            if sig is None:
                self._fail(path, "the file is gone (renamed or deleted?); keeping the current mapping")
                return applied
            return self._begin(path, forced=False) or applied

    def reload_now(self) -> bool:
        """Reload unconditionally (SIGHUP); True when a new mapping was applied (with
        ``background=True`` the validation starts now and a later ``poll()`` applies it)."""
        with self._lock:
            applied = self._collect()
            if self.busy:  # never wait for it: the next poll() starts the forced reload
                self._force_pending = True
                return applied
            return self._force() or applied

    def _force(self) -> bool:
        path = self.path
        self._watched = path
        self._sig = self._signature(path)
        return self._begin(path, forced=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no validation is running; True if idle (a ``poll()`` then applies it)."""
        return self._idle.wait(timeout)

    # ------------------------------------------------------------------ internals
    def _fail(self, path: Path, why: str) -> None:
        self.failures += 1
        self.last_error = why
        log.warning("mapping %s not reloaded: %s", path, why)

    def _begin(self, path: Path, *, forced: bool) -> bool:
        """Refuse from the stat alone, or validate (on the worker, or inline)."""
        st = self._stat(path)
        if st is None:
            self._fail(path, "the file is gone (renamed or deleted?); keeping the current mapping")
            return False
        try:  # a FIFO, a device, a folder or a huge file: refused from the stat, never opened
            check_stat(st, short_path(path), MAX_MAPPING_BYTES, "mapping file", MappingError)
        except MappingError as exc:
            self._refused(str(exc), text=None)
            return False
        model, known = self.model, (None if forced else self._text)
        if not self.background:
            self._result = self._validate(path, model, known)
            return self._collect()
        self._idle.clear()
        self._worker = threading.Thread(target=self._work, args=(path, model, known),
                                        name="canne-mapping-validate", daemon=True)
        self._worker.start()
        return False

    def _work(self, path: Path, model, known) -> None:
        try:
            self._result = self._validate(path, model, known)
        finally:
            self._idle.set()

    @staticmethod
    def _validate(path: Path, model, known: str | None):
        """(path, text, mapping, error): runs on the worker thread; never raises."""
        text = None
        try:
            text = read_mapping_text(path)
            if known is not None and text == known:
                return (path, text, None, None)  # touched or rewritten identically: nothing to do
            return (path, text, load_mapping_text(text, model, source=str(path), path=path), None)
        except CanneError as exc:
            return (path, text, None, str(exc))
        except Exception as exc:  # a bug must not kill the watcher or the control loop
            return (path, text, None, f"{path}: {type(exc).__name__}: {exc}")

    def _collect(self) -> bool:
        """Apply (or refuse) a finished validation on the caller's thread."""
        if not self._idle.is_set():  # the worker still owns _result
            return False
        result, self._result = self._result, None
        if result is None:
            return False
        path, text, new, error = result
        if error is not None:
            self._refused(error, text)
            return False
        self._text = text
        if new is None:
            return False
        if self._mapper is not None and not self._mapper.set_mapping(new, if_same_source=True):
            # a program change switched file or model while this one was validated:
            # it wins; the next poll watches what the Mapper plays now
            log.info("mapping %s not applied: a program change came first", path)
            return False
        self.reloads += 1
        self.last_error = None
        log.info("mapping reloaded: %s (%d controls)", path, len(new.controls))
        return True

    def _refused(self, error: str, text: str | None) -> None:
        self._text = text
        self.failures += 1
        self.last_error = error
        log.warning("mapping edit refused, keeping the previous mapping: %s", error)
