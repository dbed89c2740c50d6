"""Tiny train -> export -> onnxruntime round trip on the synthetic corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest

from daemon.core.contract import OPTIONAL_KEYS, REQUIRED_KEYS
from daemon.core.model import DecoderModel, EncoderModel
from training.errors import ExportError
from training.export import export_model, read_metadata
from training.model import APPEND_OPTIONS
from training.train import TrainConfig, train

from training_util import TINY_MODEL, TINY_STFT, tiny_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus") / "c", n_patches=10)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(corpus=str(corpus.path), out=str(root / "run"), epochs=12, batch_size=64,
                      seed=0, threads=1, model={**TINY_MODEL, "append": "diff1"})
    summary = train(cfg, corpus=corpus, progress=False, log=lambda *_: None)
    model_dir = root / "model"
    export_model(root / "run", model_dir, corpus=corpus)
    return summary, root / "run", model_dir


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_loss_fell_by_a_real_margin(trained):
    summary, run, _ = trained
    log = json.loads((run / "log.json").read_text())
    # training loss (spectral convergence, MSE form) falls several-fold ...
    assert log[-1]["train_loss"] < 0.3 * log[1]["train_loss"]
    assert log[-1]["train_loss"] < 0.25
    # ... and the held-out patch (an unseen timbre) improves on the untrained model
    assert summary["val"]["sc_mse"] < 0.8 * summary["initial_val"]["sc_mse"]
    assert (run / "config.json").is_file() and (run / "best.pt").is_file()


def test_onnx_matches_torch_and_reloads(trained, corpus):
    import torch

    from training.train import load_checkpoint

    _, run, model_dir = trained
    model, _ = load_checkpoint(run)
    x = np.ascontiguousarray(corpus.frames[corpus.split_index("val")][:300])
    enc, dec = _session(model_dir / "encoder.onnx"), _session(model_dir / "decoder.onnx")
    assert [i.name for i in dec.get_inputs()] == ["z"]
    assert [o.name for o in dec.get_outputs()] == ["magnitude"]
    assert [i.name for i in enc.get_inputs()] == ["magnitude"]
    assert [o.name for o in enc.get_outputs()] == ["z"]
    z = enc.run(None, {"magnitude": x})[0]
    y = dec.run(None, {"z": z})[0]
    with torch.no_grad():
        z_ref = model.encoder(torch.as_tensor(x)).numpy()
        y_ref = model.decoder(torch.as_tensor(z_ref)).numpy()
    assert np.max(np.abs(z - z_ref)) <= 1e-4
    assert np.max(np.abs(y - y_ref)) <= 1e-4
    for batch in (1, 7):  # batch is a dynamic axis
        assert dec.run(None, {"z": z[:batch]})[0].shape == (batch, TINY_STFT.n_bins)


def test_metadata_complete_and_well_formed(trained, corpus):
    _, _, model_dir = trained
    for name in ("decoder.onnx", "encoder.onnx"):
        meta = read_metadata(model_dir / name)
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        assert not missing, f"{name} lacks {missing}"
        d = int(meta["latent_dim"])
        assert d == TINY_MODEL["latent_dim"]
        lo, hi, default = (np.array(json.loads(meta[k]))
                           for k in ("latent_min", "latent_max", "latent_default"))
        assert lo.shape == hi.shape == default.shape == (d,)
        assert np.all(lo < hi) and np.all((lo <= default) & (default <= hi))
        assert int(meta["sample_rate"]) == TINY_STFT.sample_rate
        assert int(meta["n_fft"]) == TINY_STFT.n_fft
        assert int(meta["hop_length"]) == TINY_STFT.hop_length
        assert meta["window"] == "hann" and meta["canne_format_version"] == "1"
        assert 0 <= int(meta["reference_note"]) <= 127 and meta["corpus"]
        vm = json.loads(meta["validation_metrics"])
        assert math.isclose(vm["sc_sqrt"] ** 2, vm["sc_mse"], rel_tol=1e-4)
        assert math.isclose(vm["sc_db"], 20 * math.log10(vm["sc_sqrt"]), abs_tol=1e-3)
        json.loads(meta["training_config"])
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == d and cfg["stft"]["n_fft"] == TINY_STFT.n_fft


def test_fresh_export_loads_through_the_daemons_loader(trained, corpus):
    """The round trip the contract exists for: what the export writes, the daemon's own
    loader (daemon.core.model) reads, with the same configuration and the same numbers."""
    import torch

    from training.train import load_checkpoint

    _, run, model_dir = trained
    dec = DecoderModel(model_dir)
    meta = read_metadata(model_dir / "decoder.onnx")
    assert set(meta) == set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
    assert (dec.sample_rate, dec.n_fft, dec.hop_length, dec.latent_dim) == (
        TINY_STFT.sample_rate, TINY_STFT.n_fft, TINY_STFT.hop_length, TINY_MODEL["latent_dim"])
    assert dec.format_version == 1 and not dec.conditioned and dec.n_bins == TINY_STFT.n_bins
    np.testing.assert_array_equal(dec.latent_default, np.array(json.loads(meta["latent_default"]), np.float32))
    enc = EncoderModel(dec)
    x = np.ascontiguousarray(corpus.frames[corpus.split_index("val")][:50])
    model, _ = load_checkpoint(run)
    with torch.no_grad():
        z_ref = model.encoder(torch.as_tensor(x)).numpy()
        y_ref = model.decoder(torch.as_tensor(z_ref)).numpy()
    z = enc.encode(x)
    assert np.max(np.abs(z - z_ref)) <= 1e-4
    out = np.empty((len(z), dec.n_bins), np.float32)
    assert dec.decode(z, out=out) is out  # the engine's in-place path
    assert np.max(np.abs(out - y_ref)) <= 1e-4


def test_decoder_output_safe_far_outside_learned_range(trained):
    _, _, model_dir = trained
    meta = read_metadata(model_dir / "decoder.onnx")
    lo, hi = np.array(json.loads(meta["latent_min"])), np.array(json.loads(meta["latent_max"]))
    rng = np.random.default_rng(3)
    span = hi - lo
    z = rng.uniform(lo - 10 * span, hi + 10 * span, size=(500, len(lo))).astype(np.float32)
    y = _session(model_dir / "decoder.onnx").run(None, {"z": z})[0]
    assert np.all(np.isfinite(y)) and y.min() >= 0.0


@pytest.mark.parametrize("append", APPEND_OPTIONS)
def test_every_append_option_exports_within_tolerance(append, corpus, tmp_path):
    cfg = TrainConfig(corpus=str(corpus.path), out=str(tmp_path / "run"), epochs=1,
                      batch_size=128, threads=1, model={**TINY_MODEL, "append": append})
    train(cfg, corpus=corpus, progress=False, log=lambda *_: None)
    meta = export_model(tmp_path / "run", tmp_path / "model", corpus=corpus)
    assert json.loads(meta["training_config"])["model"]["append"] == append
    assert (tmp_path / "model" / "encoder.onnx").is_file()


def test_export_refuses_when_parity_fails(trained, corpus, tmp_path):
    _, run, _ = trained
    with pytest.raises(ExportError, match="nothing was written"):
        export_model(run, tmp_path / "model", corpus=corpus, tolerance=-1.0)
    assert not (tmp_path / "model").exists()


def test_cli_corpus_train_export_report(tmp_path, capsys):
    from training.cli import main

    c, run, model = tmp_path / "c", tmp_path / "run", tmp_path / "model"
    assert main(["corpus", "--source", "synth", "--n-patches", "5", "--sample-rate", "8000",
                 "--n-fft", "256", "--hop-length", "64", "--note-seconds", "0.2",
                 "--tail-seconds", "0.1", "--out", str(c)]) == 0
    assert main(["train", "--corpus", str(c), "--out", str(run), "--epochs", "2",
                 "--encoder-widths", "32,16", "--latent-dim", "3", "--decoder-widths", "16,32",
                 "--append", "mfcc", "--no-progress"]) == 0
    assert main(["export", "--run", str(run), "--out", str(model)]) == 0
    assert main(["report", "--run", str(run)]) == 0
    for png in ("loss.png", "reconstructions.png", "latents.png"):
        data = (run / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert int(read_metadata(model / "decoder.onnx")["latent_dim"]) == 3


@pytest.mark.parametrize("reg", [{"dropout": 0.2, "dropout_min_width": 24},
                                 {"input_dropout": 0.3}], ids=["dropout", "input-dropout"])
def test_regularised_model_exports_deterministic_graph(reg, corpus, tmp_path):
    cfg = TrainConfig(corpus=str(corpus.path), out=str(tmp_path / "run"), epochs=1,
                      batch_size=128, threads=1, model={**TINY_MODEL, **reg})
    train(cfg, corpus=corpus, progress=False, log=lambda *_: None)
    export_model(tmp_path / "run", tmp_path / "model", corpus=corpus)
    x = np.ascontiguousarray(corpus.frames[:50])
    enc = _session(tmp_path / "model" / "encoder.onnx")
    z1, z2 = enc.run(None, {"magnitude": x})[0], enc.run(None, {"magnitude": x})[0]
    np.testing.assert_array_equal(z1, z2)  # no dropout left in the exported graph
