"""Session-wide guards, so that a run (passing or failing, in any file order) leaves nothing behind.

- ``JACK_NO_START_SERVER=1`` for the whole session: importing sounddevice (PortAudio's JACK
  host API) or jack/rtmidi outside a fixture's own server must never autostart a default
  ``jackd`` (on a machine with a sound card it would keep running after the tests). The
  tests that need a server start a named dummy one (``jack_util.jack_server_env``).
- Every ``jackd`` and ``canne run`` the helpers start is registered (``jack_util.spawn``)
  and SIGKILLed at the end of the session (and at exit); on Linux the kernel also kills
  them if pytest itself dies (``PR_SET_PDEATHSIG``). An instrument whose supervisor dies
  exits by itself (``daemon.app.supervisor.ChildLink``).

Shared fixtures: ``model`` (the default harmonic test decoder of ``harmonic_model.py``,
loaded once per session), ``model_dir`` (its folder), ``harmonic_models`` (the same
decoder built with other arguments, once each) and ``rng`` (a seeded numpy Generator).
"""

from __future__ import annotations

import os

os.environ["JACK_NO_START_SERVER"] = "1"

import jack_util  # noqa: E402


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    jack_util.kill_all()


# ---------------------------------------------------------------- shared test models and helpers
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def harmonic_models(tmp_path_factory):
    """``get(**build_args) -> DecoderModel``: the known-answer harmonic decoder of
    ``tests/harmonic_model.py``, built and loaded once per session for each set of
    ``build_harmonic_decoder`` arguments (the files share them; none may change one)."""
    from harmonic_model import build_harmonic_decoder

    from daemon.core.model import DecoderModel

    cache: dict = {}

    def get(**build_args):
        key = tuple(sorted(build_args.items()))
        if key not in cache:
            folder = tmp_path_factory.mktemp("harmonic") / "hm"
            cache[key] = DecoderModel(build_harmonic_decoder(folder, **build_args))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def model(harmonic_models):
    """The default harmonic test decoder (44.1 kHz, 4096/1024, latent_dim 8, latents -2..2,
    default 0); a test file with a ``model`` fixture of its own uses that instead."""
    return harmonic_models()


@pytest.fixture(scope="session")
def model_dir(model):
    """The folder of the default harmonic test decoder (``decoder.onnx`` inside), for
    commands given ``--model``; read-only."""
    return model.path.parent


@pytest.fixture
def rng():
    """A seeded numpy Generator (the same numbers in every run)."""
    return np.random.default_rng(0)


@pytest.fixture
def offline_audio(monkeypatch):
    """``make(render, inputs=0, **kw)``: an ``AudioOutput`` without a device (the device
    lookup replaced by a fixed 48 kHz description); drive its ``_callback`` directly."""
    import daemon.adapters.audio_output as ao

    def make(render, inputs: int = 0, **kw):
        fake = {"index": 0, "name": "test", "hostapi": "none", "outputs": 2, "inputs": inputs,
                "default_samplerate": 48000.0}
        monkeypatch.setattr(ao, "find_output_device", lambda spec: fake)
        return ao.AudioOutput(render, **kw)

    return make
