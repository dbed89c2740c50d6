"""Session-wide guards, so that a run (passing or failing, in any file order) leaves nothing behind.

- ``JACK_NO_START_SERVER=1`` for the whole session: importing sounddevice (PortAudio's JACK
  host API) or jack/rtmidi outside a fixture's own server must never autostart a default
  ``jackd`` (on a machine with a sound card it would keep running after the tests). The
  tests that need a server start a named dummy one (``jack_util.jack_server_env``).
- Every ``jackd`` and ``canne run`` the helpers start is registered (``jack_util.spawn``)
  and SIGKILLed at the end of the session (and at exit); on Linux the kernel also kills
  them if pytest itself dies (``PR_SET_PDEATHSIG``). An instrument whose supervisor dies
  exits by itself (``daemon.supervisor.ChildLink``).
"""

from __future__ import annotations

import os

os.environ["JACK_NO_START_SERVER"] = "1"

import jack_util  # noqa: E402


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    jack_util.kill_all()
