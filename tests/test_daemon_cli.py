"""`canne run` / `canne devices` / `canne learn` as a performer meets them: exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jack_util import MidiSender, jack_server_env, wait_for

REPO = Path(__file__).resolve().parent.parent


def _no_server_env() -> dict:
    env = dict(os.environ)
    env["JACK_DEFAULT_SERVER"] = f"canne-absent-{os.getpid()}"
    env["JACK_NO_START_SERVER"] = "1"
    return env


def _canne(args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "daemon.app.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if " ERROR " in ln]


@pytest.mark.parametrize("supervised", [pytest.param(True, id="supervised"),
                                        pytest.param(False, id="no-supervisor")])
def test_unknown_audio_device_exits_2_with_one_line(model_dir, supervised):
    args = ["run", "--model", str(model_dir), "--device", "no-such-card-xyz", "--midi-api", "jack"]
    if not supervised:
        args.append("--no-supervisor")
    r = _canne(args, _no_server_env())
    assert r.returncode == 2, r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 1, r.stderr
    assert "--device no-such-card-xyz" in errors[0]
    assert "canne devices" in errors[0] or "available" in errors[0]


def test_no_audio_device_at_all_says_so(model_dir):
    probe = subprocess.run([sys.executable, "-c", "import sounddevice as sd; "
                            "print(sum(d['max_output_channels'] > 0 for d in sd.query_devices()))"],
                           env=_no_server_env(), capture_output=True, text=True, timeout=60)
    if probe.stdout.strip() != "0":
        pytest.skip("this machine has an audio output device besides JACK")
    r = _canne(["run", "--model", str(model_dir)], _no_server_env())
    assert r.returncode == 2, r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 1 and "no audio output device" in errors[0] and "JACK" in errors[0]


def _fake_sounddevice(folder: Path, body: str) -> dict:
    """An environment whose ``import sounddevice`` runs ``body`` (e.g. fails as without PortAudio)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sounddevice.py").write_text(body)
    env = _no_server_env()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize(
    "body, needle",
    [
        # What sounddevice raises when find_library('portaudio') finds nothing.
        pytest.param("raise OSError('PortAudio library not found')\n",
                     "PortAudio library cannot be loaded (PortAudio library not found): install it", id="no-portaudio"),
        pytest.param("raise RuntimeError('something unexpected')\n",
                     "start-up failed: RuntimeError: something unexpected", id="unexpected-exception"),
    ],
)
def test_broken_audio_library_is_one_line_exit_2_and_never_restarted(model_dir, tmp_path, body, needle):
    """The README's promise on a fresh machine: one line, status 2, no supervisor restart loop."""
    env = _fake_sounddevice(tmp_path / "fake", body)
    t0 = time.monotonic()
    r = _canne(["run", "--model", str(model_dir)], env)
    elapsed = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0] and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "restart" not in r.stderr
    assert elapsed < 15


def test_no_device_is_the_only_line_printed(model_dir):
    """Start-up INFO lines (model, mapping) are held back until the sound runs."""
    r = _canne(["run", "--model", str(model_dir), "--device", "no-such-card-xyz"], _no_server_env())
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("after_sound, code, level", [("0", 2, "ERROR"), ("1", 75, "WARNING")],
                         ids=["first-start", "restart-after-sound"])
def test_missing_device_is_final_before_sound_and_temporary_after(model_dir, after_sound, code, level):
    """The supervised child (--child): a missing device is a configuration error (2, never
    restarted) unless the supervisor says the instrument has played (then 75: retry)."""
    env = _no_server_env()
    env["CANNE_RESTART_AFTER_SOUND"] = after_sound
    # stdin stays open, as the supervisor's end does (its end-of-file means "supervisor gone").
    proc = subprocess.Popen([sys.executable, "-m", "daemon.app.cli", "run", "--child", "--model", str(model_dir),
                             "--device", "no-such-card-xyz"], env=env, cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        rc = proc.wait(60)
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f" {level} " in lines[0] and "no-such-card-xyz" in lines[0], err
    assert out == ""  # the heartbeat channel: nothing before the stream runs


def test_version():
    r = _canne(["--version"], _no_server_env())
    assert r.returncode == 0 and r.stdout.startswith("canne 0.") and "Python" in r.stdout


@pytest.mark.parametrize(
    "make_args, needle",
    [
        pytest.param(lambda tmp, model: ["--model", str(tmp / "missing-model")], "missing-model",
                     id="missing-model"),
        pytest.param(lambda tmp, model: ["--model", str(model), "--mapping", str(tmp / "bad.yaml")], "bad.yaml",
                     id="invalid-mapping"),
    ],
)
def test_bad_model_or_mapping_exits_2_naming_the_file(tmp_path, model_dir, make_args, needle):
    (tmp_path / "bad.yaml").write_text("version: 1\ncontrols:\n  - {cc: 300, neuron: 0}\n")
    r = _canne(["run", *make_args(tmp_path, model_dir)], _no_server_env())
    assert r.returncode == 2, r.stderr
    errors = _error_lines(r.stderr)
    assert len(errors) == 1 and needle in errors[0], r.stderr


@pytest.mark.parametrize("value", ["fast", "5"], ids=["word", "too-long"])
def test_bad_latency_is_refused_by_the_parser(value):
    r = _canne(["run", "--latency", value], _no_server_env())
    assert r.returncode == 2 and "--latency" in r.stderr


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "config" / "canne" / "mappings"


def test_learn_never_targets_a_shipped_mapping(user_dirs, tmp_path):
    from daemon import paths
    from daemon.app.cli import learn_destination

    shipped = paths.shipped_dir("mappings")
    for spec in (None, "default", str(shipped / "default.yaml"), str(REPO / "mappings" / "default.yaml")):
        dest, source, note = learn_destination(spec)
        assert Path(dest) == user_dirs / "default.yaml", spec
        assert Path(source) == shipped / "default.yaml" or Path(source) == REPO / "mappings" / "default.yaml"
        assert "shipped" in note and str(dest) in note and "canne run" in note
        assert user_dirs.is_dir() and not Path(dest).exists()  # the copy is written only by a successful learn
    dest, source, note = learn_destination("korg_nanokontrol2")
    assert Path(dest) == user_dirs / "korg_nanokontrol2.yaml" and "--mapping korg_nanokontrol2" in note
    # The performer's copy, once there, is edited in place; so is any file of theirs.
    (user_dirs / "default.yaml").write_text("version: 1\n")
    assert learn_destination(None) == (str(user_dirs / "default.yaml"), None, None)
    mine = tmp_path / "mine.yaml"
    assert learn_destination(str(mine)) == (str(mine), None, None)
    dest, source, note = learn_destination("brand-new")
    assert (Path(dest), source) == (user_dirs / "brand-new.yaml", None) and "new mapping" in note


# -- with a JACK dummy server ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with jack_server_env("canne-cli", tmp_path_factory.mktemp("jack")) as srv:
        yield srv


@pytest.mark.jack
def test_devices_lists_midi_ports_with_api_and_audio_with_host_api(server):
    sender = MidiSender("canne-cli-ctl")
    try:
        r = _canne(["devices"], server.env)
    finally:
        sender.close()
    assert r.returncode == 0, r.stderr
    assert "[jack] canne-cli-ctl:out" in r.stdout
    assert "system (JACK Audio Connection Kit; 2 out" in r.stdout


@pytest.mark.jack
@pytest.mark.parametrize(
    "target, sends, expected, replaced",
    [
        pytest.param("latent.3", [(40, v) for v in (10, 20, 30, 40)], ["cc: 40", "neuron: 3"],
                     ["replaced 2 controls", "{cc: 24, neuron: 3, label: Knob 4}", "{cc: 73, neuron: 3, label: K4}"],
                     id="knob-to-neuron"),
        pytest.param("gain", [(41, 1)] * 4, ["cc: 41", "param: gain", "encoder"],
                     ["replaced 1 control ", "{cc: 7, param: gain"], id="encoder-to-gain"),
    ],
)
def test_learn_binds_the_next_cc_and_writes_the_yaml(server, model_dir, tmp_path, target, sends, expected,
                                                     replaced):
    from daemon.control.mapping import load_mapping
    from daemon.core.model import DecoderModel

    mapping = tmp_path / "learned.yaml"
    mapping.write_text((REPO / "mappings" / "default.yaml").read_text())
    sender = MidiSender("canne-learn-ctl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.app.cli", "learn", target, "--mapping", str(mapping), "--model",
         str(model_dir), "--midi-in", "canne-learn-ctl", "--midi-api", "jack", "--timeout", "30"],
        env=server.env, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while "move the control" not in line:
            line = proc.stderr.readline()
            assert line, "canne learn exited before listening"
        assert "canne-learn-ctl:out" in line
        # A JACK connection takes effect a process cycle or more after it is made (more
        # under load): messages sent before are lost. Wait until the graph shows learn's
        # connection, then a little more; and repeat the gesture until learn has what it
        # needs (as a performer would move the knob again).
        import jack

        probe = jack.Client("learn-probe", no_start_server=True, servername=server.name)
        try:
            wait_for(lambda: probe.get_all_connections(sender.port_name), 20, 0.02, "learn's MIDI connection")
        finally:
            probe.close()
        time.sleep(0.2)
        for _ in range(15):
            sender.send(0xF8)  # clock is ignored
            sender.note_on(60, 100)  # notes too
            for cc, value in sends:
                sender.cc(cc, value)
                time.sleep(0.02)
            try:
                proc.wait(timeout=2.0)
                break
            except subprocess.TimeoutExpired:
                continue
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sender.close()
    assert proc.returncode == 0, err
    text = mapping.read_text()
    for piece in expected:
        assert piece in text, text
    assert "Knob 1" in text  # the rest of the file, comments and all, is kept
    load_mapping(mapping, DecoderModel(model_dir))  # and it still validates
    for piece in replaced:  # what the binding replaced is said, not silently dropped
        assert piece in err, err


@pytest.mark.jack
def test_instrument_stops_when_its_supervisor_is_killed(server, model_dir):
    """An orphaned instrument would hold the audio device; it notices the broken heartbeat pipe."""
    import signal

    from jack_util import Daemon

    d = Daemon(["run", "--model", str(model_dir), "--midi-api", "jack"], env=server.env, cwd=REPO)
    try:
        d.wait_log("audio:", timeout=60)
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(d.proc.pid)], capture_output=True, text=True)
        child = int(out.stdout.split()[0])
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)

        def gone():
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            # A zombie (exited, not yet reaped by init) counts as gone.
            stat = Path(f"/proc/{child}/stat")
            return stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z"

        wait_for(gone, 15, 0.1, "the orphaned instrument to stop")
    finally:
        d.kill()
