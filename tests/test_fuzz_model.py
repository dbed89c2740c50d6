"""Hostile model folders: the only outcomes are a working DecoderModel or one ModelError line.

Tiny ONNX decoders built with ``onnx.helper`` (n_fft 64: 33 bins, latent_dim 8), then
broken on purpose: truncated or corrupted bytes, wrong or absurd metadata (1e400,
5,000-digit numbers, JSON nested 100,000 deep), wrong input/output dtypes (float64,
float16, int64) and shapes, graphs that fail only when run, files that are not files.
A model that loads must also decode (with and without an ``out`` buffer) to float32
[batch, n_bins], or refuse with ModelError there. Anything else is an escape.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from daemon.errors import ModelError  # noqa: E402
from daemon.core.model import DecoderModel  # noqa: E402

N_FFT = 64
N_BINS = N_FFT // 2 + 1
LATENT = 8
SEED = 9


def metadata(**over) -> dict:
    meta = {
        "canne_format_version": "1",
        "sample_rate": "16000",
        "n_fft": str(N_FFT),
        "hop_length": "16",
        "window": "hann",
        "latent_dim": str(LATENT),
        "latent_min": json.dumps([-1.0] * LATENT),
        "latent_max": json.dumps([1.0] * LATENT),
        "latent_default": json.dumps([0.0] * LATENT),
        "reference_note": "60",
        "corpus": "fuzz",
        "validation_metrics": json.dumps({"sc_db": 0.0}),
    }
    for key, value in over.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    return meta


def decoder_bytes(*, in_type=TensorProto.FLOAT, out_type=TensorProto.FLOAT, width=N_BINS, in_width=LATENT,
                  in_name="z", extra_input=False, out_rank3=False, declared_out_shape=None, runtime_fail=False,
                  nan=False, opset=17, ir_version=8, meta=None) -> bytes:
    """z [batch, in_width] -> |z @ W| [batch, width], cast to ``out_type``."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(in_width, width)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    nodes = []
    x = in_name
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], ["zf"], to=TensorProto.FLOAT))
        x = "zf"
    nodes += [helper.make_node("MatMul", [x, "W"], ["y"]), helper.make_node("Abs", ["y"], ["a"])]
    last = "a"
    if nan:
        inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
        nodes.append(helper.make_node("Mul", [last, "nan"], ["n"]))
        last = "n"
    if runtime_fail:  # a Reshape to a size that never fits: fails in run(), not at load
        inits.append(numpy_helper.from_array(np.array([7, 5], np.int64), "bad_shape"))
        nodes.append(helper.make_node("Reshape", [last, "bad_shape"], ["r"]))
        last = "r"
    if out_rank3:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
        nodes.append(helper.make_node("Unsqueeze", [last, "ax"], ["u"]))
        last = "u"
    nodes.append(helper.make_node("Cast", [last], ["magnitude"], to=out_type))
    inputs = [helper.make_tensor_value_info(in_name, in_type, ["batch", in_width])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("pitch", TensorProto.FLOAT, ["batch", 1]))
        nodes.append(helper.make_node("Identity", ["pitch"], ["unused"]))
    out_shape = declared_out_shape or (["batch", 1, width] if out_rank3 else ["batch", width])
    graph = helper.make_graph(nodes, "fuzz_decoder", inputs,
                              [helper.make_tensor_value_info("magnitude", out_type, out_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    helper.set_model_props(model, metadata() if meta is None else meta)
    return model.SerializeToString()


GOOD = decoder_bytes()


def _deep_json(n: int) -> str:
    return "[" * n + "]" * n


# name -> bytes of decoder.onnx, or a callable(folder) that builds something odd
CASES: dict = {
    "valid": GOOD,
    "valid-nan-output": decoder_bytes(nan=True),  # loads; the engine counts non-finite blocks
    # graph dtypes and shapes
    "output-float64": decoder_bytes(out_type=TensorProto.DOUBLE),
    "output-float16": decoder_bytes(out_type=TensorProto.FLOAT16),
    "output-int64": decoder_bytes(out_type=TensorProto.INT64),
    "output-bool": decoder_bytes(out_type=TensorProto.BOOL),
    "input-float64": decoder_bytes(in_type=TensorProto.DOUBLE),
    "input-int64": decoder_bytes(in_type=TensorProto.INT64),
    "output-width-10": decoder_bytes(width=10),
    "output-width-34": decoder_bytes(width=N_BINS + 1),
    "output-rank-3": decoder_bytes(out_rank3=True),
    "output-declared-wrong": decoder_bytes(declared_out_shape=["batch", 5]),
    "input-width-7": decoder_bytes(in_width=7),
    "input-width-9": decoder_bytes(in_width=9),
    "input-named-x": decoder_bytes(in_name="x"),
    "two-inputs-format-1": decoder_bytes(extra_input=True),
    "fails-only-when-run": decoder_bytes(runtime_fail=True),
    "opset-999": decoder_bytes(opset=999),
    "ir-version-99": decoder_bytes(ir_version=99),
    # metadata
    "no-metadata": decoder_bytes(meta={}),
    "missing-latent-min": decoder_bytes(meta=metadata(latent_min=None)),
    "format-version-3": decoder_bytes(meta=metadata(canne_format_version="3")),
    "format-version-2-bare": decoder_bytes(meta=metadata(canne_format_version="2")),
    "format-version-1e400": decoder_bytes(meta=metadata(canne_format_version="1e400")),
    "latent-dim-0": decoder_bytes(meta=metadata(latent_dim="0")),
    "latent-dim-negative": decoder_bytes(meta=metadata(latent_dim="-8")),
    "latent-dim-text": decoder_bytes(meta=metadata(latent_dim="eight")),
    "latent-dim-1e400": decoder_bytes(meta=metadata(latent_dim="1e400")),
    "latent-dim-nan": decoder_bytes(meta=metadata(latent_dim="NaN")),
    "latent-dim-5000-digits": decoder_bytes(meta=metadata(latent_dim="9" * 5000)),
    "latent-dim-list": decoder_bytes(meta=metadata(latent_dim="[8]")),
    "latent-dim-7": decoder_bytes(meta=metadata(latent_dim="7", latent_min=json.dumps([0] * 7),
                                                latent_max=json.dumps([1] * 7), latent_default=json.dumps([0] * 7))),
    "sample-rate-1e400": decoder_bytes(meta=metadata(sample_rate="1e400")),
    "sample-rate-0": decoder_bytes(meta=metadata(sample_rate="0")),
    "n-fft-odd": decoder_bytes(meta=metadata(n_fft="63")),
    "n-fft-2-pow-40": decoder_bytes(meta=metadata(n_fft=str(2**40))),
    "n-fft-5000-digits": decoder_bytes(meta=metadata(n_fft="6" * 5000)),
    "hop-over-n-fft": decoder_bytes(meta=metadata(hop_length="65")),
    "window-hamming": decoder_bytes(meta=metadata(window="hamming")),
    "window-deep-json": decoder_bytes(meta=metadata(window=_deep_json(100_000))),
    "latent-min-short": decoder_bytes(meta=metadata(latent_min="[0, 1]")),
    "latent-min-nan": decoder_bytes(meta=metadata(latent_min=json.dumps([0.0] * 7) [:-1] + ", NaN]")),
    "latent-min-text": decoder_bytes(meta=metadata(latent_min="low")),
    "latent-min-1MB-text": decoder_bytes(meta=metadata(latent_min="x" * (1 << 20))),
    "latent-min-dict": decoder_bytes(meta=metadata(latent_min='{"a": 1}')),
    "latent-min-nested": decoder_bytes(meta=metadata(latent_min=json.dumps([[0.0]] * LATENT))),
    "latent-min-1e400": decoder_bytes(meta=metadata(latent_min=json.dumps([0.0] * 7)[:-1] + ", 1e400]")),
    "latent-default-deep-json": decoder_bytes(meta=metadata(latent_default=_deep_json(100_000))),
    "reference-note-128": decoder_bytes(meta=metadata(reference_note="128")),
    "reference-note-1e400": decoder_bytes(meta=metadata(reference_note="1e400")),
    "reference-note-5000-digits": decoder_bytes(meta=metadata(reference_note="1" * 5000)),
    "reference-note-text": decoder_bytes(meta=metadata(reference_note="C4")),
    "metrics-not-json": decoder_bytes(meta=metadata(validation_metrics="{not json")),
    "corpus-1MB": decoder_bytes(meta=metadata(corpus="x" * (1 << 20))),
    "metadata-not-utf8": decoder_bytes(meta=metadata(corpus="QQQQ")).replace(b"QQQQ", b"\xff\xfe\xfd\xfc"),
    "format-2-pitch-min-huge": decoder_bytes(extra_input=True, meta=metadata(
        canne_format_version="2", conditioning="pitch", pitch_unit="midi_note", pitch_min="1" * 400,
        pitch_max="100", decoder_kind="mlp")),
    "format-2-beyond-range-bogus": decoder_bytes(extra_input=True, meta=metadata(
        canne_format_version="2", conditioning="pitch", pitch_unit="midi_note", pitch_min="36",
        pitch_max="96", decoder_kind="harmonic", pitch_beyond_range="wrap")),
    "format-2-beyond-range-exact-mlp": decoder_bytes(extra_input=True, meta=metadata(
        canne_format_version="2", conditioning="pitch", pitch_unit="midi_note", pitch_min="36",
        pitch_max="96", decoder_kind="mlp", pitch_beyond_range="exact")),
    # bytes
    "empty-file": b"",
    "text-file": b"this is not an onnx model\n",
    "zeros-4KiB": bytes(4096),
}


def _folder_without_decoder(folder: Path) -> Path:
    folder.mkdir()
    return folder


def _decoder_is_a_folder(folder: Path) -> Path:
    (folder / "decoder.onnx").mkdir(parents=True)
    return folder


def _decoder_is_a_fifo(folder: Path) -> Path:
    folder.mkdir()
    os.mkfifo(folder / "decoder.onnx")
    return folder


def _decoder_is_dev_zero(folder: Path) -> Path:
    folder.mkdir()
    (folder / "decoder.onnx").symlink_to("/dev/zero")
    return folder


def _external_data_missing(folder: Path) -> Path:
    folder.mkdir()
    model = onnx.load_from_string(GOOD)
    onnx.save_model(model, str(folder / "decoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (folder / "weights.bin").unlink()
    return folder


def _external_data_escapes_folder(folder: Path) -> Path:
    folder.mkdir()
    model = onnx.load_from_string(GOOD)
    for init in model.graph.initializer:
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        init.external_data.add(key="location", value="/etc/passwd")
        init.ClearField("raw_data")
    (folder / "decoder.onnx").write_bytes(model.SerializeToString())
    return folder


CASES.update({
    "folder-without-decoder": _folder_without_decoder,
    "decoder-is-a-folder": _decoder_is_a_folder,
    "decoder-is-a-fifo": _decoder_is_a_fifo,
    "decoder-is-dev-zero": _decoder_is_dev_zero,
    "external-data-missing": _external_data_missing,
    "external-data-outside": _external_data_escapes_folder,
})

# seeded corruptions of the valid file: truncations and flipped bytes
_rng = random.Random(SEED)
for _k in range(10):
    _cut = int(len(GOOD) * (_k + 0.5) / 10)
    CASES[f"truncated-{_cut}"] = GOOD[:_cut]
for _k in range(14):
    _b = bytearray(GOOD)
    for _ in range(_rng.choice([1, 2, 8, 64])):
        _b[_rng.randrange(len(_b))] = _rng.randrange(256)
    CASES[f"flipped-{_k}"] = bytes(_b)

# these load and decode fine: the graph's declared output shape and input name are not
# what matters (the runtime output is), a [[x]] * 8 latent_min flattens to 8 values
VALID = {"valid", "valid-nan-output", "metrics-not-json", "corpus-1MB", "output-declared-wrong", "input-named-x",
         "latent-min-nested"}
# flipped bytes may land in weights (still a valid model) or anywhere else
EITHER = {name for name in CASES if name.startswith(("flipped-", "truncated-"))}

def outcome(folder: Path) -> str:
    """'ok', 'refused', or 'ESCAPE: ...'."""
    try:
        model = DecoderModel(folder)
    except ModelError as exc:
        msg = str(exc)
        if len(msg.splitlines()) != 1 or len(msg) > 1500:
            return f"ESCAPE: not one short line: {msg[:300]!r}"
        if str(folder) not in msg:
            return f"ESCAPE: does not name the model: {msg[:300]!r}"
        return "refused"
    except Exception as exc:
        return f"ESCAPE: {type(exc).__name__}: {str(exc)[:300]!r}"
    z = np.tile(model.latent_default, (3, 1)).astype(np.float32)
    try:
        frames = model.decode(z)
        out = np.empty((3, model.n_bins), np.float32)
        frames_out = model.decode(z, out=out)
    except ModelError:
        return "refused"
    except Exception as exc:
        return f"ESCAPE: loaded, then decode raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]!r}"
    for f in (frames, frames_out):
        if not isinstance(f, np.ndarray) or f.dtype != np.float32 or f.shape != (3, model.n_bins):
            return f"ESCAPE: loaded, decode gives {getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}"
    return "ok"


def test_at_least_50_model_folders():
    assert len(CASES) >= 50


@pytest.mark.parametrize("name", list(CASES))
def test_model_folder(tmp_path, name):
    folder = tmp_path / "model"
    case = CASES[name]
    if callable(case):
        if "fifo" in name and not hasattr(os, "mkfifo"):
            pytest.skip("POSIX only")
        folder = case(folder)
    else:
        folder.mkdir()
        (folder / "decoder.onnx").write_bytes(case)
    got = outcome(folder)
    assert not got.startswith("ESCAPE"), got
    if name in EITHER:
        assert got in ("ok", "refused")
    else:
        assert got == ("ok" if name in VALID else "refused"), got
