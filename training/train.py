"""Training loop: Adam on spectral convergence + lambda * ||theta||^2, patch-level validation.

Every checkpoint (``best.pt``, ``last.pt``) has the resolved configuration beside it
(``config.json``); the per-epoch log is written as ``log.csv`` and ``log.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from training.corpus import Corpus, load_corpus
from training.errors import TrainingError
from training.model import Autoencoder, ModelConfig

LOSSES = ("sc_mse", "sc", "mse")


@dataclass
class TrainConfig:
    corpus: str = "cache/corpus"
    out: str = "runs/model"
    epochs: int = 100
    batch_size: int = 200
    lr: float = 1e-3
    l2: float = 1e-10
    loss: str = "sc_mse"
    log_weight: float = 0.0
    log_floor_db: float = -80.0
    # log-spectral distance term: RMS over the bins of the dB difference between the frame
    # and its reconstruction, floored softly at -60 dB re the frame's peak, in units of
    # 20 dB (0: off). Spectral convergence alone is blind to everything 30 dB below the
    # peak (high partials, breath, the noise between partials), which the ear hears.
    lsd_weight: float = 0.0
    # knob contrast (conditioned models): each latent neuron moved alone between its range
    # ends (1st and 99th percentile of the encoded training frames) should change the decoded
    # spectrum by at least `knob_db` (log-spectral distance, floor -60 dB re peak); the
    # shortfall, in units of 20 dB, is added with weight `knob_weight` (0: off)
    knob_weight: float = 0.0
    knob_db: float = 12.0
    knob_frames: int = 64
    # knob guard: a range end may be no brighter (spectral centroid / f0) than the corpus's
    # 99th percentile at that pitch (excess as a log ratio) and no noisier than its
    # `knob_hnr_percentile`th percentile of harmonic-to-noise ratio (shortfall per 10 dB);
    # added with this weight (0: off). Without it the contrast is bought with hiss.
    knob_guard: float = 0.0
    knob_hnr_percentile: float = 5.0
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    patience: int = 0
    max_minutes: float = 0.0
    lr_decay: float = 1.0
    epoch_frames: int = 0  # 0: every training frame each epoch; else a fresh random subset
    init: str = ""  # start from this checkpoint's weights (same architecture)
    model: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise TrainingError(f"loss={self.loss!r} is unknown; choose one of {LOSSES}")
        if self.device not in ("cpu", "cuda"):
            raise TrainingError(f"device={self.device!r} is unknown; use cpu or cuda")
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError("epochs and batch_size must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def spectral_metrics(sq_err: float, sq_ref: float) -> dict:
    """Both spectral-convergence forms and dB from summed squares.

    ``sc_mse`` is the thesis code's form, sum((X - Xh)^2) / sum(X^2) (= MSE over the mean
    square of the target); ``sc_sqrt`` is its equation 4.1, ||X - Xh||_F / ||X||_F;
    ``sc_db`` = 20 log10(sc_sqrt).
    """
    ratio = sq_err / max(sq_ref, 1e-30)
    root = math.sqrt(ratio)
    return {"sc_mse": ratio, "sc_sqrt": root, "sc_db": 20.0 * math.log10(max(root, 1e-12))}


@torch.no_grad()
def evaluate(model: Autoencoder, frames: np.ndarray, *, pitch: np.ndarray | None = None,
             device: str = "cpu", chunk: int = 2000) -> dict:
    """Spectral convergence of ``model`` over ``frames`` [n, n_bins] (with their ``pitch``
    [n] for a conditioned model)."""
    was_training = model.training
    model.eval()
    err = ref = 0.0
    for i in range(0, len(frames), chunk):
        x = torch.as_tensor(np.asarray(frames[i:i + chunk]), device=device)
        p = None if pitch is None else torch.as_tensor(
            np.asarray(pitch[i:i + chunk], dtype=np.float32), device=device)
        y = model(x, p)
        err += float(((y - x) ** 2).sum(dtype=torch.float64))
        ref += float((x * x).sum(dtype=torch.float64))
    model.train(was_training)
    return spectral_metrics(err, ref)


def log_spectral_distance(a: torch.Tensor, b: torch.Tensor, floor_db: float = -60.0) -> torch.Tensor:
    """Per-row log-spectral distance (dB) between magnitude rows ``a`` and ``b``: RMS over
    the bins of the dB difference, each row floored at ``floor_db`` below its own peak."""
    def db(m):
        d = 20.0 * torch.log10(m.clamp_min(1e-12))
        return torch.maximum(d - d.amax(dim=1, keepdim=True), torch.full_like(d, floor_db))
    return torch.sqrt(((db(a) - db(b)) ** 2).mean(dim=1) + 1e-8)


def soft_lsd(y: torch.Tensor, x: torch.Tensor, floor_db: float = -60.0) -> torch.Tensor:
    """Per-row log-spectral distance (dB) of ``y`` from the target ``x``, both in dB re the
    target's peak with a soft floor (``10 log10(m^2 + floor^2)``), so it has a gradient
    everywhere, unlike a hard clamp."""
    peak = x.amax(dim=1, keepdim=True).clamp_min(1e-12)
    f2 = (peak * 10.0 ** (floor_db / 20.0)) ** 2
    dy = 10.0 * torch.log10(y * y + f2)
    dx = 10.0 * torch.log10(x * x + f2)
    return torch.sqrt(((dy - dx) ** 2).mean(dim=1) + 1e-8)


class KnobRanges:
    """Running estimate (exponential average of batch percentiles) of every latent
    neuron's range ends, the 1st and 99th percentiles of the encoded training frames; and,
    for the knob guard, the corpus's bounds per whole MIDI note (:func:`timbre_bounds`)."""

    def __init__(self, momentum: float = 0.98, bright_cap: torch.Tensor | None = None,
                 hnr_floor: torch.Tensor | None = None, bin_hz: float = 1.0) -> None:
        self.lo = self.hi = None
        self.momentum = momentum
        self.bright_cap, self.hnr_floor = bright_cap, hnr_floor
        self.bin_hz = bin_hz

    def update(self, z: torch.Tensor) -> None:
        q = torch.quantile(z.detach(), torch.tensor([0.01, 0.99], device=z.device), dim=0)
        if self.lo is None:
            self.lo, self.hi = q[0], q[1]
        else:
            m = self.momentum
            self.lo, self.hi = m * self.lo + (1 - m) * q[0], m * self.hi + (1 - m) * q[1]


def _freqs(m, bin_hz: float):
    n = m.shape[1]
    if isinstance(m, torch.Tensor):
        return torch.arange(n, dtype=m.dtype, device=m.device) * bin_hz
    return np.arange(n, dtype=np.float64) * bin_hz


def brightness(m, pitch, bin_hz: float):
    """Spectral centroid (power-weighted) over f0, per row of magnitudes ``m``."""
    p2 = m * m
    tot = p2.sum(1)
    cen = (p2 @ _freqs(m, bin_hz)) / (tot + 1e-30)
    return cen / (440.0 * 2.0 ** ((pitch - 69.0) / 12.0))


def harmonic_to_noise_db(m, pitch, bin_hz: float):
    """Harmonic-to-noise ratio (dB) per row of magnitudes ``m``: power within 2 bins of a
    harmonic of the row's pitch (the Hann main lobes) over the power elsewhere. (Not
    ``training.labels.harmonicity``, the corpus labeller's share of energy near the first
    harmonics: that one is numpy per frame; this one also runs in torch with a gradient.)"""
    lib = torch if isinstance(m, torch.Tensor) else np
    f0 = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    ratio = _freqs(m, bin_hz)[None, :] / f0[:, None]
    h = lib.round(ratio)
    on = ((lib.abs(ratio - h) * f0[:, None] / bin_hz < 2.0) & (h >= 1.0))
    on = on.to(m.dtype) if lib is torch else on.astype(np.float64)
    p2 = m * m
    tiny = 1e-6 * p2.sum(1) + 1e-30  # at most 60 dB; keeps the gradient finite
    return 10.0 * lib.log10(((p2 * on).sum(1) + tiny) / ((p2 * (1.0 - on)).sum(1) + tiny))


def timbre_bounds(corpus: Corpus, idx: np.ndarray, hnr_percentile: float = 5.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """What the corpus's own frames span at every whole MIDI note 0..127 (frames within a
    semitone; notes with none take the nearest): the 99th percentile of the brightness
    (centroid / f0) and the ``hnr_percentile``th percentile of the harmonic-to-noise ratio
    (dB)."""
    bin_hz = corpus.stft.sample_rate / corpus.stft.n_fft
    br, hn = [], []
    for i in range(0, len(idx), 4096):
        m = np.asarray(corpus.frames[idx[i:i + 4096]], np.float64)
        p = corpus.pitch[idx[i:i + 4096]].astype(np.float64)
        br.append(brightness(m, p, bin_hz))
        hn.append(harmonic_to_noise_db(m, p, bin_hz))
    br, hn = np.concatenate(br), np.concatenate(hn)
    pitch = corpus.pitch[idx]
    cap, floor = np.full(128, np.nan), np.full(128, np.nan)
    for n in range(128):
        sel = np.abs(pitch - n) <= 1.0
        if sel.sum() >= 20:
            cap[n] = np.percentile(br[sel], 99)
            floor[n] = np.percentile(hn[sel], hnr_percentile)
    have = np.flatnonzero(np.isfinite(cap))
    if len(have) == 0:
        raise TrainingError("the knob guard needs voiced frames with pitch labels")
    near = have[np.abs(have[None, :] - np.arange(128)[:, None]).argmin(1)]
    return cap[near], floor[near]


def knob_terms(cfg: TrainConfig, model: Autoencoder, z: torch.Tensor, pitch: torch.Tensor,
               ranges: KnobRanges) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``knob_frames`` latents of the batch, each with one neuron (in turn) set
    to its low and then its high range end, decoded at the frame's pitch. Returns the mean
    shortfall (in units of 20 dB) of the log-spectral distance between the two ends below
    ``cfg.knob_db``, and the guard's mean excess: the ends' brightness over the corpus's
    ceiling at that pitch (log ratio) plus their harmonic-to-noise ratio under the corpus's
    floor (per 10 dB); 0 without bounds."""
    k = min(cfg.knob_frames, len(z))
    base = z[:k].detach()
    dims = torch.arange(k, device=z.device) % z.shape[1]
    rows = torch.arange(k, device=z.device)
    z_lo, z_hi = base.clone(), base.clone()
    z_lo[rows, dims] = ranges.lo[dims]
    z_hi[rows, dims] = ranges.hi[dims]
    p = pitch[:k].reshape(-1)
    y = model.decode(torch.cat([z_lo, z_hi]), torch.cat([p, p]))
    lsd = log_spectral_distance(y[:k], y[k:])
    short = torch.relu(cfg.knob_db - lsd).mean() / 20.0
    if ranges.bright_cap is None:
        return short, torch.zeros((), device=z.device)
    pp = torch.cat([p, p])
    note = torch.clamp(torch.round(pp), 0, 127).to(torch.int64)
    bright = brightness(y, pp, ranges.bin_hz).clamp_min(1e-6)  # a silent end: no log(0)
    excess = torch.relu(torch.log(bright / ranges.bright_cap[note]))
    # noise: the harmonic-to-noise ratio below the corpus's floor, per 10 dB
    excess = excess + torch.relu(ranges.hnr_floor[note] - harmonic_to_noise_db(y, pp, ranges.bin_hz)) / 10.0
    return short, excess.mean()


def batch_loss(cfg: TrainConfig, model: Autoencoder, x: torch.Tensor,
               pitch: torch.Tensor | None = None, ranges: KnobRanges | None = None) -> torch.Tensor:
    z = model.encoder(x)
    y = model.decode(z, pitch)
    se = ((y - x) ** 2).sum()
    if cfg.loss == "sc_mse":
        loss = se / (x * x).sum()
    elif cfg.loss == "sc":
        loss = torch.sqrt(se / (x * x).sum())
    else:
        loss = se / x.numel()
    if cfg.log_weight > 0:
        floor = 10.0 ** (cfg.log_floor_db / 20.0)
        loss = loss + cfg.log_weight * (torch.log10(y.clamp_min(0) + floor)
                                        - torch.log10(x + floor)).abs().mean()
    if cfg.lsd_weight > 0:
        loss = loss + cfg.lsd_weight * soft_lsd(y, x).mean() / 20.0
    if cfg.knob_weight > 0 and ranges is not None and pitch is not None:
        ranges.update(z)
        short, excess = knob_terms(cfg, model, z, pitch, ranges)
        loss = loss + cfg.knob_weight * short + cfg.knob_guard * excess
    if cfg.l2 > 0:
        loss = loss + cfg.l2 * model.l2()
    return loss


def split_frames(corpus: Corpus, name: str, mcfg: ModelConfig) -> np.ndarray:
    """Frame indices of split ``name`` a model trains or is measured on: every frame for an
    unconditioned model, the voiced frames (which have a pitch) for a conditioned one."""
    idx = corpus.split_index(name)
    if mcfg.conditioning != "pitch":
        return idx
    if not corpus.has_pitch:
        raise TrainingError(f"corpus {corpus.path} has no pitch labels (pitch.npy, voiced.npy); "
                            "rebuild it with this version of 'canne-train corpus'")
    return idx[corpus.voiced[idx]]


def save_checkpoint(path: Path, model: Autoencoder, cfg: TrainConfig, info: dict) -> None:
    torch.save({"model_state": model.state_dict(), "model_config": model.cfg.to_dict(),
                "train_config": cfg.to_dict(), "info": info}, path)


def load_checkpoint(path: str | Path) -> tuple[Autoencoder, dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist; train first with "
                            "'canne-train train' or pass the run directory")
    try:
        # weights_only: a checkpoint holds tensors and plain configuration dicts, never code
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"checkpoint {path} cannot be loaded safely: "
                            f"{str(exc).strip().splitlines()[0][:200]}") from None
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    model = Autoencoder(ModelConfig(**{k: v for k, v in ck["model_config"].items() if k in known}))
    model.load_state_dict(ck["model_state"])
    model.eval()
    return model, ck


def train(cfg: TrainConfig, *, corpus: Corpus | None = None, progress: bool = True,
          log=print) -> dict:
    """Train an autoencoder on ``cfg.corpus``; returns the summary written to ``summary.json``."""
    from tqdm import tqdm

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    corpus = corpus or load_corpus(cfg.corpus)
    st = corpus.stft
    mcfg = ModelConfig(**{"n_bins": st.n_bins, "sample_rate": st.sample_rate, **cfg.model})
    if mcfg.n_bins != st.n_bins:
        raise TrainingError(f"model n_bins={mcfg.n_bins} does not match the corpus "
                            f"({st.n_bins} bins for n_fft={st.n_fft})")
    cfg.model = mcfg.to_dict()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"train": cfg.to_dict(), "model": mcfg.to_dict(), "stft": st.to_dict(),
                "corpus": {"path": str(corpus.path), "description": corpus.meta["description"],
                           "n_frames": corpus.meta["n_frames"], "split": corpus.meta["split"]}}
    (out / "config.json").write_text(json.dumps(resolved, indent=1))

    tr_idx, va_idx = split_frames(corpus, "train", mcfg), split_frames(corpus, "val", mcfg)
    if len(tr_idx) == 0 or len(va_idx) == 0:
        if mcfg.conditioning == "pitch":
            raise TrainingError(f"corpus {corpus.path} has no voiced (pitched) frames in its train or "
                                "validation split; for unpitched material (drums, noise) train with "
                                "--conditioning none")
        raise TrainingError(f"corpus {corpus.path} has an empty train or validation split")
    dev = cfg.device
    x_train = torch.as_tensor(np.ascontiguousarray(corpus.frames[tr_idx]), device=dev)
    x_val = np.ascontiguousarray(corpus.frames[va_idx])
    cond = mcfg.conditioning == "pitch"
    p_train = torch.as_tensor(corpus.pitch[tr_idx], device=dev) if cond else None
    p_val = corpus.pitch[va_idx] if cond else None
    model = Autoencoder(mcfg).to(dev)
    if cfg.init:
        start, _ = load_checkpoint(cfg.init)
        try:  # weights only: fixed tables (bases, bins) come from this run's configuration
            weights = {k: v for k, v in start.state_dict().items()
                       if k in dict(model.named_parameters())}
            missing = set(dict(model.named_parameters())) - set(weights)
            if missing:
                raise RuntimeError(f"missing {sorted(missing)[:3]}")
            model.load_state_dict(weights, strict=False)
        except RuntimeError as exc:
            raise TrainingError(f"--init {cfg.init}: its weights do not fit this model "
                                f"({str(exc).splitlines()[0][:160]}); use the same widths") from None
        log(f"initialised from {cfg.init}")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    n = len(x_train)
    per_epoch = min(n, cfg.epoch_frames) if cfg.epoch_frames > 0 else n
    steps = math.ceil(per_epoch / cfg.batch_size)
    history: list[dict] = []
    v0 = evaluate(model, x_val, pitch=p_val, device=dev)
    history.append({"epoch": 0, "train_loss": float("nan"), "seconds": 0.0, **{
        f"val_{k}": v for k, v in v0.items()}})
    log(f"train {n} frames ({len(corpus.meta['split']['train'])} patches), "
        f"val {len(x_val)} frames; initial val sc_mse {v0['sc_mse']:.4f}")
    knobbed = cfg.knob_weight > 0 and cond
    ranges = None
    if knobbed:
        cap = None
        floor = None
        if cfg.knob_guard > 0:
            cap, floor = (torch.as_tensor(v, dtype=torch.float32, device=dev)
                          for v in timbre_bounds(corpus, tr_idx, cfg.knob_hnr_percentile))
            log("knob guard: brightness (centroid/f0) at most the corpus's 99th percentile, "
                f"{float(cap[36]):.2f} at C2, {float(cap[60]):.2f} at C4, {float(cap[96]):.2f} "
                f"at C7; harmonic-to-noise ratio at least its {cfg.knob_hnr_percentile:g}th percentile, "
                f"{float(floor[36]):.1f} / {float(floor[60]):.1f} / {float(floor[96]):.1f} dB")
        ranges = KnobRanges(bright_cap=cap, hnr_floor=floor, bin_hz=st.sample_rate / st.n_fft)
        # range ends from the starting model, then followed through training
        with torch.no_grad():
            ranges.update(model.encoder(x_train[torch.as_tensor(
                rng.choice(n, min(n, 20000), replace=False), device=dev)]))
        kv = np.sort(rng.choice(len(x_val), min(len(x_val), 2048), replace=False))
        x_kv = torch.as_tensor(x_val[kv], device=dev)
        p_kv = torch.as_tensor(p_val[kv], device=dev)
    best, best_epoch, t0 = float("inf"), 0, time.perf_counter()
    stop_reason = "epochs"
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.as_tensor(rng.permutation(n)[:per_epoch], device=dev)
        total = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for s in bar:
            sel = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = batch_loss(cfg, model, x_train[sel], None if p_train is None else p_train[sel],
                              ranges)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            if s % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        sched.step()
        vm = evaluate(model, x_val, pitch=p_val, device=dev)
        if not all(math.isfinite(v) for v in vm.values()):
            raise TrainingError(f"training diverged at epoch {epoch} (validation metric is not "
                                "finite); lower --lr")
        if knobbed:  # the objective the epoch is judged by includes the knob contrast
            with torch.no_grad():
                model.eval()
                zk = model.encoder(x_kv)
                short, excess = (float(v) for v in knob_terms(
                    dataclasses.replace(cfg, knob_frames=len(zk)), model, zk, p_kv, ranges))
                model.train()
            vm["knob_shortfall"] = short
            vm["knob_excess"] = excess
            vm["objective"] = vm["sc_mse"] + cfg.knob_weight * short + cfg.knob_guard * excess
        elapsed = time.perf_counter() - t0
        row = {"epoch": epoch, "train_loss": total / steps, "seconds": elapsed,
               **{f"val_{k}": v for k, v in vm.items()}}
        history.append(row)
        score = vm["objective"] if knobbed else vm["sc_mse"]
        improved = score < best
        if improved:
            best, best_epoch = score, epoch
            save_checkpoint(out / "best.pt", model, cfg, {"epoch": epoch, "val": vm})
        save_checkpoint(out / "last.pt", model, cfg, {"epoch": epoch, "val": vm})
        _write_log(out, history)
        log(f"epoch {epoch:4d}  train {row['train_loss']:.4f}  val sc_mse {vm['sc_mse']:.4f}  "
            f"sc_sqrt {vm['sc_sqrt']:.4f}  {vm['sc_db']:.2f} dB  {elapsed:7.1f} s"
            + (f"  knob shortfall {20 * vm['knob_shortfall']:.2f} dB, guard excess "
               f"{vm['knob_excess']:.3f}" if knobbed else "")
            + ("  *" if improved else ""))
        if cfg.patience and epoch - best_epoch >= cfg.patience:
            stop_reason = f"no validation improvement for {cfg.patience} epochs"
            break
        if cfg.max_minutes and elapsed / 60.0 * (epoch + 1) / epoch > cfg.max_minutes:
            stop_reason = f"time budget {cfg.max_minutes} min"
            break
    best_model, ck = load_checkpoint(out / "best.pt")
    test_idx = split_frames(corpus, "test", mcfg)
    summary = {
        "best_epoch": best_epoch, "epochs_run": history[-1]["epoch"], "stop_reason": stop_reason,
        "train_seconds": history[-1]["seconds"], "initial_val": v0,
        "val": ck["info"]["val"],
        "test": evaluate(best_model.to(dev), np.ascontiguousarray(corpus.frames[test_idx]),
                         pitch=corpus.pitch[test_idx] if cond else None,
                         device=dev) if len(test_idx) else None,
        "n_train_frames": int(n), "n_val_frames": int(len(x_val)),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"done: best epoch {best_epoch}, val sc_mse {summary['val']['sc_mse']:.4f} "
        f"({summary['val']['sc_db']:.2f} dB), {stop_reason}")
    return summary


def _write_log(out: Path, history: list[dict]) -> None:
    (out / "log.json").write_text(json.dumps(history, indent=1))
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in history for k in r)))
        w.writeheader()
        w.writerows(history)
