"""Guarded reading of input files (mappings, MIDI files): type and size checked first.

``read_input_file(path, limit=..., what=..., error=...)`` returns the bytes of a
regular file no larger than ``limit``, or raises ``error`` (a ``CanneError``
subclass) with one line naming the file and what is wrong. It never blocks on a
FIFO, never reads a device (``/dev/zero``) or a folder, and never reads more than
``limit + 1`` bytes even if the file grows while it is read:

1. ``os.stat``: refuse anything but a regular file, or one larger than ``limit``,
   before opening it;
2. open with ``O_NONBLOCK`` (a FIFO swapped in after the stat does not block the
   open), ``fstat`` the descriptor and check again;
3. read at most ``limit + 1`` bytes.
"""

from __future__ import annotations

import os
import stat

__all__ = ["read_input_file", "check_stat", "short_path", "format_size"]

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def format_size(n: int) -> str:
    """Bytes as a short human figure: 1 MiB, 2.5 MiB, 300 KiB, 12 bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:,.0f} {unit}"
    return f"{n} bytes"


def short_path(path, keep: int = 160) -> str:
    """The path as text, shortened in the middle if very long (for one-line messages)."""
    s = str(path)
    s = s.replace("\x00", "\\x00")
    s = " ".join(s.splitlines()) if s else s
    if len(s) <= keep:
        return s
    return f"{s[: keep // 2]}…{s[-(keep // 2):]} ({len(s)} characters)"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_stat(st: os.stat_result, p: str, limit: int, what: str, error) -> None:
    """Raise ``error`` unless ``st`` is a regular file of at most ``limit`` bytes."""
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: is {_kind(st.st_mode)}, not a {what}; give a regular file")
    if st.st_size > limit:
        raise error(f"{p}: the {what} is too large ({format_size(st.st_size)}); "
                    f"the limit is {format_size(limit)}")


def read_input_file(path, *, limit: int, what: str, error, not_found_hint: str = "") -> bytes:
    """Bytes of a regular file of at most ``limit`` bytes, or ``error`` with one line.

    Parameters
    ----------
    path : str or Path
    limit : int
        Largest size accepted, bytes.
    what : str
        What the file is, for messages ("mapping file", "MIDI file").
    error : type
        Exception class raised (one ``str`` argument), e.g. ``MappingError``.
    not_found_hint : str
        Appended to the "not found" message (what to pass instead).
    """
    p = short_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found{'; ' + not_found_hint if not_found_hint else ''}") from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, EACCES, ELOOP; ValueError: a NUL in the path
        raise error(f"{p}: cannot read the {what}: {_reason(exc)}") from None
    check_stat(st, p, limit, what, error)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError) as exc:
        raise error(f"{p}: cannot read the {what}: {_reason(exc)}") from None
    try:
        check_stat(os.fstat(fd), p, limit, what, error)  # it may have been replaced since the stat
        chunks = []
        left = limit + 1
        while left > 0:
            try:
                chunk = os.read(fd, min(left, 1 << 20))
            except BlockingIOError:  # cannot happen for a regular file; never wait
                break
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise error(f"{p}: cannot read the {what}: {_reason(exc)}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise error(f"{p}: the {what} is too large (it grew past {format_size(limit)} while being read); "
                    f"the limit is {format_size(limit)}")
    return data


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ValueError) and "null" in str(exc):
        return "the path contains a NUL character"
    return (str(exc).splitlines() or [type(exc).__name__])[0]

