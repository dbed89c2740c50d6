"""daemon.app.console: log records and the status line never run into each other."""

from __future__ import annotations

import io
import logging
import threading

from daemon.app.console import Console

CLEAR = "\r\x1b[2K"


def _logger(console: Console, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers[:] = [console]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


def _screen(text: str) -> list[str]:
    """What a terminal shows: '\\r' + erase-line rewrites the current line."""
    lines = [""]
    i = 0
    while i < len(text):
        if text.startswith(CLEAR, i):
            lines[-1] = ""
            i += len(CLEAR)
        elif text[i] == "\n":
            lines.append("")
            i += 1
        else:
            lines[-1] += text[i]
            i += 1
    return lines


def test_records_go_above_the_status_line_on_a_terminal():
    out = io.StringIO()
    console = Console(out, tty=True, fmt="%(levelname)s %(message)s")
    log = _logger(console, "t.console.tty")
    console.status("voices 1 | cpu 3%")
    log.warning("mapping edit refused")
    console.status("voices 2 | cpu 4%")
    log.info("mapping reloaded")
    assert _screen(out.getvalue()) == ["WARNING mapping edit refused", "INFO mapping reloaded", "voices 2 | cpu 4%"]
    console.end_status()
    assert _screen(out.getvalue())[-1] == ""


def test_off_a_terminal_every_status_is_a_plain_line():
    out = io.StringIO()
    console = Console(out, tty=False, fmt="%(message)s")
    log = _logger(console, "t.console.pipe")
    console.status("s1")
    log.error("e1")
    console.status("s2")
    assert out.getvalue() == "s1\ne1\ns2\n"


def test_threads_never_split_a_line():
    out = io.StringIO()
    console = Console(out, tty=True, fmt="%(message)s")
    log = _logger(console, "t.console.threads")

    def spam(k):
        for i in range(200):
            log.info("record %d-%d", k, i)
            console.status(f"status {k}-{i}")

    threads = [threading.Thread(target=spam, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    screen = _screen(out.getvalue())
    assert len([ln for ln in screen if ln.startswith("record ")]) == 800
    assert all(ln.startswith("record ") and ln.count("record") == 1 for ln in screen[:-1])
    assert screen[-1].startswith("status ")


def test_held_start_up_records_are_shown_or_dropped():
    out = io.StringIO()
    console = Console(out, tty=False, fmt="%(levelname)s %(message)s")
    log = _logger(console, "t.console.hold")
    console.hold()
    log.info("model loaded")
    log.warning("virtual port unavailable")
    assert out.getvalue() == "WARNING virtual port unavailable\n"
    console.flush_held(show=False)  # the start failed: only its error line will follow
    log.error("no audio output device")
    assert out.getvalue() == "WARNING virtual port unavailable\nERROR no audio output device\n"
    console.hold()
    log.info("model loaded")
    console.flush_held(show=True)
    assert out.getvalue().endswith("INFO model loaded\n")
