"""Export a trained autoencoder to ``models/<name>/`` as ONNX with the runtime's metadata.

Writes ``decoder.onnx`` (input ``z`` [batch, latent_dim] -> output ``magnitude``
[batch, n_bins]), ``encoder.onnx`` (``magnitude`` -> ``z``, feature append inside the
graph) and ``config.json``. Both ONNX files carry the metadata of the model contract,
:mod:`daemon.core.contract` (the module the runtime's loader validates with; described in
docs/contracts.md): written with ``contract.build_metadata`` and checked with
``contract.parse_metadata`` before anything is written. The exported graphs are also run
in onnxruntime and compared with torch; a difference above ``tolerance`` (in units of the
output's peak, at least 1) raises
:class:`ExportError`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from daemon.core import contract
from daemon.errors import ModelError
from training.corpus import Corpus, load_corpus
from training.errors import ExportError, TrainingError
from training.train import evaluate, load_checkpoint

OPSET = 17


@torch.no_grad()
def encode_frames(model, frames: np.ndarray, chunk: int = 4000) -> np.ndarray:
    """Latent codes of ``frames`` [n, n_bins] -> float32 [n, latent_dim]."""
    out = [model.encoder(torch.as_tensor(np.asarray(frames[i:i + chunk])))
           for i in range(0, len(frames), chunk)]
    return torch.cat(out).numpy()


def latent_stats(z: np.ndarray) -> dict:
    """Per-neuron 1st/99th percentile range and median of encoded training frames."""
    lo = np.percentile(z, 1, axis=0)
    hi = np.percentile(z, 99, axis=0)
    med = np.median(z, axis=0)
    # a neuron that never moves still needs a usable (min < max) knob range
    flat = hi - lo < 1e-6
    lo = np.where(flat, lo - 0.5, lo)
    hi = np.where(flat, hi + 0.5, hi)
    return {"latent_min": [float(v) for v in lo], "latent_max": [float(v) for v in hi],
            "latent_default": [float(v) for v in med]}


@torch.no_grad()
def tuned_default_latent(model, z: np.ndarray, *, reference_note: int, sample_rate: int,
                         n_fft: int, max_candidates: int = 4000, cents: float = 10.0,
                         seed: int = 0) -> tuple[list[float] | None, dict]:
    """A default latent whose decoded frame is a clean tone at the reference note.

    The median latent of a multi-instrument corpus decodes to a blend of several
    notes (no clear pitch), so a performer pressing A4 would not hear A4 in the
    ``transpose`` mode. Instead: decode up to ``max_candidates`` encoded training
    frames [n, latent_dim], keep those whose decoded fundamental lies within
    ``cents`` of the reference note, rank them by harmonicity (share of the energy
    within two bins of the first 24 harmonics), and among the best tenth take the
    one nearest the median latent (in units of the learned range). Returns
    (latent, info) or (None, info) when no frame qualifies.
    """
    from daemon.core.pitch import estimate_f0, midi_to_hz

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z), min(max_candidates, len(z)), replace=False)
    zc = z[idx]
    mags = model.decoder(torch.as_tensor(zc)).numpy().astype(np.float64)
    bin_hz = sample_rate / n_fft
    ref_hz = float(midi_to_hz(reference_note))
    bins = np.arange(mags.shape[1])
    ok, harm = [], []
    for i, mag in enumerate(mags):
        f0 = estimate_f0(mag, bin_hz)
        if f0 <= 0 or abs(1200 * np.log2(f0 / ref_hz)) > cents:
            continue
        near = np.zeros(mags.shape[1], bool)
        for k in range(1, 25):
            near |= np.abs(bins - k * f0 / bin_hz) <= 2.0
        e = mag ** 2
        ok.append(i)
        harm.append(float(e[near].sum() / max(e.sum(), 1e-30)))
    info = {"candidates": int(len(zc)), "at_reference_note": len(ok)}
    if not ok:
        return None, info
    ok, harm = np.array(ok), np.array(harm)
    best = ok[harm >= np.quantile(harm, 0.9)]
    lo, hi = np.percentile(z, 1, axis=0), np.percentile(z, 99, axis=0)
    med = np.median(z, axis=0)
    dist = np.linalg.norm((zc[best] - med) / np.maximum(hi - lo, 1e-6), axis=1)
    pick = int(best[np.argmin(dist)])
    info.update({"harmonicity": round(float(harm[ok == pick][0]), 4),
                 "f0_hz": round(float(estimate_f0(mags[pick], bin_hz)), 2)})
    return [float(v) for v in zc[pick]], info


def _export_graph(module, example, path: Path, in_name, out_name: str) -> None:
    examples = example if isinstance(example, tuple) else (example,)
    names = list(in_name) if isinstance(in_name, (tuple, list)) else [in_name]
    axes = {n: {0: "batch"} for n in names}
    axes[out_name] = {0: "batch"}
    torch.onnx.export(module, examples, str(path), input_names=names,
                      output_names=[out_name], dynamic_axes=axes,
                      opset_version=OPSET, dynamo=False)


def medoid_latent(z: np.ndarray, max_points: int = 4000, seed: int = 0) -> list[float]:
    """The encoded training frame nearest the median latent, in units of the learned range
    (a real sound, where the median itself may decode to a blend)."""
    lo, hi = np.percentile(z, 1, axis=0), np.percentile(z, 99, axis=0)
    med = np.median(z, axis=0)
    rng = np.random.default_rng(seed)
    zc = z[rng.choice(len(z), min(max_points, len(z)), replace=False)]
    d = np.linalg.norm((zc - med) / np.maximum(hi - lo, 1e-6), axis=1)
    return [float(v) for v in zc[int(np.argmin(d))]]


def _set_metadata(path: Path, meta: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def _parity(path: Path, in_name: str, x: np.ndarray, ref: np.ndarray) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    if isinstance(in_name, tuple):
        feed = {n: v.astype(np.float32) for n, v in zip(in_name, x)}
    else:
        feed = {in_name: x.astype(np.float32)}
    y = sess.run(None, feed)[0]
    if y.shape != ref.shape:
        raise ExportError(f"{path.name}: onnxruntime output shape {y.shape} != torch {ref.shape}")
    # the largest difference in units of the output's scale (its peak, at least 1): float32
    # rounding grows with the values, and a decoder's frames may peak well above 1
    return float(np.max(np.abs(y - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def export_model(run: str | Path, out: str | Path, *, corpus: Corpus | str | None = None,
                 description: str | None = None, tolerance: float = 1e-4,
                 max_frames: int = 200000, seed: int = 0) -> dict:
    """Export the best checkpoint of training run ``run`` into model directory ``out``.

    Returns the metadata dict written into both ONNX files.
    """
    run, out = Path(run), Path(out)
    model, ck = load_checkpoint(run)
    model = model.float().cpu().eval()
    resolved_path = (run if run.is_dir() else run.parent) / "config.json"
    resolved = json.loads(resolved_path.read_text()) if resolved_path.is_file() else {
        "train": ck["train_config"], "model": ck["model_config"]}
    if corpus is None:
        corpus = load_corpus(ck["train_config"]["corpus"])
    elif not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    st = corpus.stft
    cfg = model.cfg
    if cfg.n_bins != st.n_bins:
        raise TrainingError(f"checkpoint {run} has {cfg.n_bins} bins but corpus {corpus.path} "
                            f"has {st.n_bins}; export with the corpus it was trained on")
    rng = np.random.default_rng(seed)
    tr = corpus.split_index("train")
    if len(tr) > max_frames:
        tr = np.sort(rng.choice(tr, max_frames, replace=False))
    from training.train import split_frames

    cond = model.conditioned
    if cond:
        tr = tr[corpus.voiced[tr]]
    z = encode_frames(model, corpus.frames[tr])
    lat = latent_stats(z)
    reference_note = int(corpus.meta.get("reference_note", 60))
    if cond:
        lat["latent_default"] = medoid_latent(z, seed=seed)
        default_info = {"kind": "encoded training frame nearest the median latent"}
    else:
        tuned, default_info = tuned_default_latent(model, z, reference_note=reference_note,
                                                   sample_rate=st.sample_rate, n_fft=st.n_fft,
                                                   seed=seed)
        if tuned is not None:
            lat["latent_default"] = tuned
            default_info["kind"] = "clean frame at the reference note"
        else:
            default_info["kind"] = "median (no decoded frame at the reference note)"
    va = split_frames(corpus, "val", cfg)
    val_frames = np.ascontiguousarray(corpus.frames[va])
    val_pitch = corpus.pitch[va] if cond else None
    vm = evaluate(model, val_frames, pitch=val_pitch)
    vm = {k: round(float(v), 6) for k, v in vm.items()}
    vm.update({"split": "validation", "n_frames": int(len(val_frames)),
               "n_patches": len(corpus.meta["split"]["val"])})
    pitch_range = None
    if cond:
        pv = corpus.pitch[tr]
        pitch_range = (float(np.floor(pv.min() * 100) / 100), float(np.ceil(pv.max() * 100) / 100))
    meta = contract.build_metadata(
        sample_rate=st.sample_rate, n_fft=st.n_fft, hop_length=st.hop_length, window=st.window,
        latent_dim=cfg.latent_dim, latent_min=lat["latent_min"], latent_max=lat["latent_max"],
        latent_default=lat["latent_default"], reference_note=reference_note,
        corpus=description or corpus.meta["description"], validation_metrics=vm,
        training_config=resolved, pitch_range=pitch_range,
        decoder_kind=cfg.pitch_decoder if cond else None,
        pitch_beyond_range="exact" if cond and cfg.pitch_decoder == "harmonic" else None)
    try:  # the runtime's own validation, before any graph is exported
        contract.parse_metadata(meta, "exported metadata")
    except ModelError as exc:
        raise ExportError(f"{exc}; nothing was written to {out}") from None

    # parity inputs: encoded training latents plus points beyond the learned range
    zs = z[rng.choice(len(z), min(256, len(z)), replace=False)]
    lo, hi = np.array(lat["latent_min"]), np.array(lat["latent_max"])
    span = hi - lo
    z_wide = rng.uniform(lo - span, hi + span, size=(64, cfg.latent_dim)).astype(np.float32)
    z_test = np.concatenate([zs, z_wide]).astype(np.float32)
    x_test = val_frames[rng.choice(len(val_frames), min(256, len(val_frames)), replace=False)]
    if cond:
        p_test = rng.uniform(float(meta["pitch_min"]), float(meta["pitch_max"]),
                             size=(len(z_test), 1)).astype(np.float32)
        if meta.get("pitch_beyond_range") == "exact":  # the graph takes any pitch
            model.decoder.clamp_conditioning(float(meta["pitch_min"]), float(meta["pitch_max"]))
            # two octaves below the range to the top MIDI note (lower, float32 rounding of
            # the harmonic number over thousands of partials passes 1e-4 in any runtime)
            p_test[::4] = rng.uniform(max(float(meta["pitch_min"]) - 24.0, 0.0), 127.0,
                                      size=p_test[::4].shape)

    model.eval()
    dec_inputs = (contract.DECODER_INPUT, contract.PITCH_INPUT)
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        dec, enc = td / "decoder.onnx", td / "encoder.onnx"
        with torch.no_grad():
            if cond:
                _export_graph(model.decoder, (torch.as_tensor(z_test[:2]),
                                              torch.as_tensor(p_test[:2])), dec, dec_inputs,
                              contract.DECODER_OUTPUT)
                ref_dec = model.decoder(torch.as_tensor(z_test), torch.as_tensor(p_test)).numpy()
            else:
                _export_graph(model.decoder, torch.as_tensor(z_test[:2]), dec, contract.DECODER_INPUT,
                              contract.DECODER_OUTPUT)
                ref_dec = model.decoder(torch.as_tensor(z_test)).numpy()
            _export_graph(model.encoder, torch.as_tensor(x_test[:2]), enc, contract.ENCODER_INPUT,
                          contract.ENCODER_OUTPUT)
            ref_enc = model.encoder(torch.as_tensor(x_test)).numpy()
        _set_metadata(dec, meta)
        _set_metadata(enc, meta)
        d_dec = _parity(dec, dec_inputs if cond else contract.DECODER_INPUT,
                        (z_test, p_test) if cond else z_test, ref_dec)
        d_enc = _parity(enc, contract.ENCODER_INPUT, x_test, ref_enc)
        if not (d_dec <= tolerance and d_enc <= tolerance):
            raise ExportError(f"onnxruntime differs from torch by {max(d_dec, d_enc):.3g} "
                              f"(decoder {d_dec:.3g}, encoder {d_enc:.3g}) > tolerance "
                              f"{tolerance:g}; nothing was written to {out}")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dec, out / "decoder.onnx")
        shutil.copyfile(enc, out / "encoder.onnx")
    config = {**resolved, "export": {"run": str(run), "best_epoch": ck["info"].get("epoch"),
                                     "parity_max_diff_re_peak": {"decoder": d_dec, "encoder": d_enc},
                                     "opset": OPSET, "default_latent": default_info},
              "metadata": {k: (json.loads(v) if k in contract.JSON_KEYS else v)
                           for k, v in meta.items() if k not in contract.OPTIONAL_KEYS}}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return meta


def read_metadata(path: str | Path) -> dict:
    """The metadata_props of an ONNX file as a dict of strings."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}
