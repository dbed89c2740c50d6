"""daemon.control.reload: editing the mapping file applies it within a second; bad edits are refused."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import mido
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_mapper import RecordingEngine  # noqa: E402

from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping  # noqa: E402
from daemon.control.reload import MappingReloader  # noqa: E402
from daemon.app.runtime import ProgramSwitcher  # noqa: E402

GOOD_A = "takeover: jump\ncontrols:\n  - {cc: 1, neuron: 0}\n"
GOOD_B = "# edited live\ntakeover: jump\ncontrols:\n  - {cc: 2, neuron: 3, range: [0, 1]}\n"
BAD = "takeover: jump\ncontrols:\n  - {cc: 2, neuron: 99}\n"


@pytest.fixture()
def setup(model, tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(GOOD_A)
    engine = RecordingEngine(model)
    mapper = Mapper(load_mapping(path, model), engine)
    return path, engine, mapper


def edit(path: Path, text: str) -> None:
    """Write like an editor does, and make sure the mtime moves even on coarse clocks."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def settle(reloader: MappingReloader) -> bool:
    """Let a background validation finish (liveness bound only), then apply it."""
    assert reloader.wait_idle(30.0), "the validation never finished"
    return reloader.poll()


def test_first_poll_after_an_edit_applies_it(setup, model):
    """The within-one-second guarantee, without timing: the first poll after an edit
    starts the validation off the caller's thread, the first poll after it is done
    swaps the mapping, and the instrument's control loop polls every 0.25 s."""
    from daemon.app.runtime import RELOAD_POLL_S

    path, engine, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    assert RELOAD_POLL_S <= 0.25
    edit(path, GOOD_B)
    assert reloader.poll() is False and mapper.mapping.controls[0].cc == 1
    assert settle(reloader) is True
    engine.clear()
    mapper.handle(mido.Message("control_change", control=2, value=127))
    mapper.handle(mido.Message("control_change", control=1, value=127))  # the old control is gone
    assert engine.of("set_latent") == [(3, 1.0)]


def test_polling_loop_applies_an_edit(setup, model):
    """As the control loop uses it: poll now and then until the edit is applied."""
    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    edit(path, GOOD_B)
    # liveness, not speed (the machine is shared)
    assert wait_for(reloader.poll, 10.0), "polling never applied the edit"
    assert mapper.mapping.controls[0].cc == 2 and reloader.reloads == 1


def test_invalid_edit_keeps_the_old_mapping_and_logs_why(setup, model, caplog):
    path, engine, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    edit(path, BAD)
    with caplog.at_level(logging.WARNING, logger="daemon.control.reload"):
        assert reloader.poll() is False
        assert settle(reloader) is False
    assert mapper.mapping.controls[0].cc == 1 and reloader.failures == 1
    (record,) = [r for r in caplog.records if r.name == "daemon.control.reload"]
    line = record.getMessage()
    assert "keeping the previous mapping" in line and f"{path}:3: controls[0].neuron" in line
    assert "\n" not in line
    # fixing the file applies it
    edit(path, GOOD_B)
    reloader.poll()
    assert settle(reloader) is True and mapper.mapping.controls[0].cc == 2


def test_unchanged_file_is_not_reloaded(setup, model):
    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    assert reloader.poll() is False
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)  # touched, same text
    before = mapper.mapping
    assert reloader.poll() is False and settle(reloader) is False
    assert mapper.mapping is before and reloader.reloads == 0 and reloader.failures == 0


def test_reload_now_forces_a_reload(setup, model):
    """SIGHUP path: reload even when the file looks unchanged."""
    path, engine, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    before = mapper.mapping
    assert reloader.reload_now() is False  # validation started, applied by the next poll
    assert settle(reloader) is True
    assert mapper.mapping is not before and mapper.mapping == before and reloader.reloads == 1


def test_inline_mode_applies_within_the_poll(setup, model):
    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper, background=False)
    edit(path, GOOD_B)
    assert reloader.poll() is True and mapper.mapping.controls[0].cc == 2
    assert reloader.reload_now() is True and reloader.reloads == 2


def test_deleted_file_keeps_mapping(setup, model, caplog):
    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="daemon.control.reload"):
        assert reloader.poll() is False
    assert mapper.mapping.controls[0].cc == 1 and "gone" in caplog.text


def test_invalid_edit_while_polling_never_swaps(setup, model):
    path, _, mapper = setup
    before = mapper.mapping
    reloader = MappingReloader(path, model, mapper)
    edit(path, BAD)
    assert wait_for(lambda: reloader.poll() or reloader.failures >= 1, 10.0)  # liveness, not speed
    assert reloader.failures == 1 and reloader.reloads == 0
    assert mapper.mapping is before


def test_program_change_during_a_reload_wins(model, tmp_path, monkeypatch):
    """A program change landing while an edit is being validated is not undone by it."""
    import daemon.control.reload

    other = tmp_path / "other.yaml"
    other.write_text("takeover: jump\ncontrols:\n  - {cc: 5, neuron: 1}\n")
    path = tmp_path / "live.yaml"
    path.write_text(GOOD_A + "programs: {1: {mapping: other.yaml}}\n")
    engine = RecordingEngine(model)
    mapper = Mapper(load_mapping(path, model), engine)
    switcher = ProgramSwitcher(mapper, engine)
    reloader = MappingReloader(path, model, mapper)
    real_load = daemon.control.reload.load_mapping_text

    def load_then_program_change(*args, **kwargs):
        new = real_load(*args, **kwargs)
        assert mapper.switch_program(1)  # the MIDI side switches meanwhile
        return new

    monkeypatch.setattr(daemon.control.reload, "load_mapping_text", load_then_program_change)
    edit(path, GOOD_B + "programs: {1: {mapping: other.yaml}}\n")
    assert reloader.poll() is False
    assert settle(reloader) is False
    assert mapper.mapping.path == other and mapper.mapping.controls[0].cc == 5
    assert reloader.reloads == 0 and switcher.switches == 1


# --------------------------------------------------------------------------- hostile files
def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return "FIFO"


def _dev_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return "character device"


def _folder(path: Path) -> str:
    path.mkdir()
    return "folder"


def _huge(path: Path) -> str:
    with open(path, "wb") as f:  # 60 MB, sparse: the size alone must refuse it
        f.truncate(60 << 20)
    return "too large"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
@pytest.mark.parametrize("make", [_fifo, _dev_zero, _folder, _huge], ids=["fifo", "dev-zero", "folder", "60MB"])
def test_a_file_that_is_not_a_small_regular_file_is_refused_by_stat(setup, model, make, caplog, monkeypatch):
    """The live file replaced by a FIFO, /dev/zero, a folder or a 60 MB file: refused
    from the stat inside poll() (no worker started, nothing opened), old mapping kept."""
    import daemon.control.reload

    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    before = mapper.mapping
    opened = []
    monkeypatch.setattr(daemon.control.reload, "read_mapping_text", lambda p: opened.append(p))
    path.unlink()
    needle = make(path)
    done = threading.Event()
    result = []

    def run():
        with caplog.at_level(logging.WARNING, logger="daemon.control.reload"):
            result.append(reloader.poll())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30.0), "poll() blocked on the file"
    assert result == [False] and not reloader.busy and opened == []
    assert mapper.mapping is before and reloader.failures == 1 and needle in reloader.last_error
    assert "\n" not in reloader.last_error
    # and the guarded loader itself refuses it the same way (SIGHUP, program change)
    monkeypatch.undo()
    with pytest.raises(MappingError, match=needle):
        load_mapping(path, model)
    # a valid file put back is applied again
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()
    path.write_text(GOOD_B)
    reloader.poll()
    assert settle(reloader) is True and mapper.mapping.controls[0].cc == 2


def test_poll_validates_off_the_calling_thread(setup, model, monkeypatch):
    """With background=True (the default) the parse and validation never run on the
    thread that polls (the instrument's control loop)."""
    import daemon.control.reload

    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    threads = []
    real = daemon.control.reload.load_mapping_text

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(daemon.control.reload, "load_mapping_text", recording)
    edit(path, GOOD_B)
    reloader.poll()
    assert settle(reloader) is True
    assert threads and threading.current_thread() not in threads


def test_sighup_during_a_validation_does_not_wait_for_it(setup, model, monkeypatch):
    """reload_now() while a (slow) validation runs returns at once; the forced reload
    follows once the running one is done."""
    import daemon.control.reload

    path, _, mapper = setup
    reloader = MappingReloader(path, model, mapper)
    release = threading.Event()
    real = daemon.control.reload.load_mapping_text

    def slow(*args, **kwargs):
        assert release.wait(30.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(daemon.control.reload, "load_mapping_text", slow)
    edit(path, GOOD_B)
    assert reloader.poll() is False and reloader.busy
    assert reloader.reload_now() is False and reloader.busy  # returned while the worker is blocked
    assert reloader.poll() is False and mapper.mapping.controls[0].cc == 1
    release.set()
    # the poll that applies the edit also starts the deferred forced reload ...
    assert settle(reloader) is True and mapper.mapping.controls[0].cc == 2 and reloader.reloads == 1
    # ... which the next poll after it is done applies
    assert settle(reloader) is True and reloader.reloads == 2
    assert settle(reloader) is False and reloader.reloads == 2  # and nothing else is pending
