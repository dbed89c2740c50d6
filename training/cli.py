"""``canne-train``: build a corpus, train, export and report, one subcommand per step.

    canne-train corpus --source soundfont --scale one-octave --out cache/fluidr3-one-octave
    canne-train train  --corpus cache/fluidr3-one-octave --out runs/default
    canne-train export --run runs/default --out models/default
    canne-train report --run runs/default

The ``train`` defaults are the shipped model's recipe (``models/README.md``): a
1000-256-64 encoder and 64-256-1024 decoder, no feature append, up to 400 epochs with
learning-rate decay 0.985 and early stopping after 20 epochs without validation
improvement, seed 0, on every core this process may use. ``--encoder-widths thesis``
(and ``--decoder-widths thesis``) give the thesis's deeper network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from daemon.errors import CanneError


def _int_list(text: str) -> list[int]:
    """'1000,512,256' -> [1000, 512, 256]; '0-7,40' -> [0..7, 40]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers "
                                         "(ranges like 0-127 allowed)") from None
    return out


#: The shipped default model's recipe (models/README.md, "Reproduce", its last stage): the
#: train subcommand's defaults. A pitch-conditioned harmonic decoder; the previous
#: one-octave recipe is `--conditioning none --decoder-widths 64,256,1024 --lr-decay 0.985
#: --epochs 400` with the rest as documented in its card.
RECIPE_ENCODER = (1000, 256, 64)
RECIPE_DECODER = (256, 256)
RECIPE = {"epochs": 1000, "patience": 20, "lr_decay": 0.98, "append": "none", "seed": 0,
          "conditioning": "pitch", "envelope": "smooth", "harmonic_floors": [0.35, 0.2, 0.2],
          "noise_scale": "wide", "epoch_frames": 50000}


def _widths(text: str) -> list[int] | str:
    """'1000,256,64' -> [1000, 256, 64]; 'thesis' -> the thesis's seven halvings."""
    if text.strip().lower() == "thesis":
        return "thesis"
    return _int_list(text)


def all_cores() -> int:
    """CPUs this process may run on (affinity and container limits included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _parser() -> argparse.ArgumentParser:
    from training.corpus import SOURCES
    from training.model import ACTIVATIONS, APPEND_OPTIONS, THESIS_DECODER, THESIS_ENCODER
    from training.scales import SCALES
    from training.stft import PROFILES
    from training.train import LOSSES

    p = argparse.ArgumentParser(prog="canne-train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("corpus", help="render or read audio into normalised STFT frames")
    c.add_argument("--source", choices=SOURCES, default=None,
                   help="folder: your recordings (--input); soundfont: render GM programs with FluidSynth; "
                        "synth: built-in test tones (default: folder when --input is given, else soundfont)")
    c.add_argument("--out", required=True, help="corpus directory to write (e.g. cache/mine)")
    c.add_argument("--input", help="folder (or file) of recordings; implies --source folder")
    c.add_argument("--soundfont", help="SF2 file (default: FluidR3_GM, else TimGM6mb)")
    c.add_argument("--scale", choices=sorted(SCALES), default="one-octave")
    c.add_argument("--programs", type=_int_list, help="GM programs, e.g. 0-127 (default all)")
    c.add_argument("--n-patches", type=int, default=32, help="patches for --source synth")
    c.add_argument("--profile", choices=sorted(PROFILES), default="default",
                   help="STFT profile: default 44100/4096/1024, lowlatency 44100/1024/256")
    c.add_argument("--sample-rate", type=int)
    c.add_argument("--n-fft", type=int)
    c.add_argument("--hop-length", type=int)
    c.add_argument("--silence-db", type=float, default=60.0,
                   help="drop frames this many dB below the patch's loudest frame")
    c.add_argument("--note-seconds", type=float, default=1.0)
    c.add_argument("--tail-seconds", type=float, default=0.5)
    c.add_argument("--gain", type=float, default=0.5, help="FluidSynth master gain")
    c.add_argument("--segment-seconds", type=float, default=0.0,
                   help="cut recordings into patches of this length (0: one patch per file); "
                        "with --source phrases: the length of each program's phrase (default 20)")
    c.add_argument("--seed", type=int, default=0, help="split (and synth) seed")
    c.add_argument("--jobs", type=int, default=2, help="parallel FluidSynth renders")

    t = sub.add_parser("train", help="train an autoencoder on a corpus")
    t.add_argument("--corpus", required=True)
    t.add_argument("--out", required=True, help="run directory (checkpoints, logs)")
    t.add_argument("--epochs", type=int, default=RECIPE["epochs"],
                   help="most epochs (default: %(default)s; early stopping usually ends sooner)")
    t.add_argument("--batch-size", type=int, default=200)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-decay", type=float, default=RECIPE["lr_decay"],
                   help="learning-rate factor per epoch (default: %(default)s)")
    t.add_argument("--l2", type=float, default=1e-10, help="lambda of the ||theta||^2 term")
    t.add_argument("--loss", choices=LOSSES, default="sc_mse")
    t.add_argument("--log-weight", type=float, default=0.0,
                   help="weight of an added log-magnitude L1 term (0: off)")
    t.add_argument("--lsd-weight", type=float, default=0.0,
                   help="weight of an added log-spectral-distance term (soft floor -60 dB re "
                        "the frame's peak, in units of 20 dB; 0: off): makes the decoder model "
                        "what lies 30-60 dB below the peak, which spectral convergence ignores")
    t.add_argument("--knob-weight", type=float, default=0.0,
                   help="conditioned models: weight of the knob-contrast term, which asks every "
                        "latent neuron moved alone across its range to change the spectrum by "
                        "--knob-db (0: off)")
    t.add_argument("--knob-db", type=float, default=12.0,
                   help="knob contrast asked for, log-spectral distance in dB (default: %(default)s)")
    t.add_argument("--knob-guard", type=float, default=0.0,
                   help="weight of the knob guard: a knob's range ends may not be brighter "
                        "(centroid/f0) than the corpus's 99th percentile at that note (0: off)")
    t.add_argument("--knob-hnr-percentile", type=float, default=5.0,
                   help="knob guard: a range end's harmonic-to-noise ratio may not fall below "
                        "this percentile of the corpus's at that note (default: %(default)s)")
    t.add_argument("--append", choices=APPEND_OPTIONS, default=RECIPE["append"])
    t.add_argument("--encoder-widths", type=_widths, default=list(RECIPE_ENCODER), metavar="W,W,..|thesis",
                   help="hidden layer widths (default: %s; 'thesis': %s)"
                        % (",".join(map(str, RECIPE_ENCODER)), ",".join(map(str, THESIS_ENCODER))))
    t.add_argument("--decoder-widths", type=_widths, default=list(RECIPE_DECODER), metavar="W,W,..|thesis",
                   help="hidden layer widths (default: %s; 'thesis': %s)"
                        % (",".join(map(str, RECIPE_DECODER)), ",".join(map(str, THESIS_DECODER))))
    t.add_argument("--latent-dim", type=int, default=8)
    t.add_argument("--preset", choices=("anne",), default=None,
                   help="anne: the thesis's ANNe effect network (2049-512-256-128-64 sigmoid-128-"
                        "256-512-2049 sigmoid, no bias); overrides widths, latent size, "
                        "activations and bias")
    t.add_argument("--no-bias", action="store_true")
    t.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    t.add_argument("--latent-activation", choices=ACTIVATIONS, default="linear")
    t.add_argument("--output-activation", choices=("relu", "softplus", "sigmoid"), default="relu")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="dropout after hidden layers >= 256 wide (training only; 0: off)")
    t.add_argument("--input-dropout", type=float, default=0.0,
                   help="denoising: fraction of input bins zeroed while training (0: off)")
    t.add_argument("--conditioning", choices=("none", "pitch"), default=RECIPE["conditioning"],
                   help="pitch: the decoder takes (z, pitch) - model format 2 (needs a corpus "
                        "with pitch labels; trains on its voiced frames)")
    t.add_argument("--pitch-decoder", choices=("harmonic", "mlp"), default="harmonic",
                   help="conditioned decoder: envelope x harmonic comb + noise, or a plain MLP")
    t.add_argument("--envelope", choices=("bins", "smooth"), default=RECIPE["envelope"],
                   help="harmonic decoder's envelope: one value per bin, or smooth (log-spaced "
                        "points x a bounded gain per harmonic: every latent stays clearly pitched)")
    t.add_argument("--harmonic-floors", type=lambda t: [float(v) for v in t.split(",")],
                   default=list(RECIPE["harmonic_floors"]),
                   metavar="F1,F2,..", help="smooth envelope: harmonic k never falls below Fk x the "
                   "strongest of the first 8 (e.g. 0.35,0.2,0.2: the fundamental and the next two stay "
                   "audible, so every latent keeps its pitch)")
    t.add_argument("--noise-scale", choices=("mel", "wide"), default=RECIPE["noise_scale"],
                   help="harmonic decoder's noise floor bands: mel, or wide (no band narrow enough "
                        "to pass for a partial)")
    t.add_argument("--init", default="", metavar="RUN|CKPT",
                   help="start from a checkpoint's weights (same widths), e.g. to fine-tune")
    t.add_argument("--epoch-frames", type=int, default=RECIPE["epoch_frames"],
                   help="frames drawn afresh for each epoch (0: the whole training split)")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument("--threads", type=int, default=all_cores(),
                   help="torch CPU threads (default: all cores here, %(default)s)")
    t.add_argument("--seed", type=int, default=RECIPE["seed"])
    t.add_argument("--patience", type=int, default=RECIPE["patience"], help="early stop after N epochs without "
                   "validation improvement (0: off; default: %(default)s)")
    t.add_argument("--max-minutes", type=float, default=0.0, help="stop before this budget (0: off)")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("export", help="write decoder.onnx, encoder.onnx and config.json")
    e.add_argument("--run", required=True, help="run directory or checkpoint file")
    e.add_argument("--out", required=True, help="model directory, e.g. models/default")
    e.add_argument("--corpus", help="corpus directory (default: the one it was trained on)")
    e.add_argument("--description", help="corpus description for the metadata")
    e.add_argument("--tolerance", type=float, default=1e-4)

    r = sub.add_parser("report", help="PNG figures: loss curves, reconstructions, latents")
    r.add_argument("--run", help="training run: loss curves, reconstructions, latent histograms")
    r.add_argument("--model", help="exported model folder: writes its latent_map.png (what each knob "
                   "does) into it")
    r.add_argument("--out", help="folder for the PNGs (default: RUN/report)")
    r.add_argument("--corpus", help="corpus directory (default: the one it was trained on)")
    r.add_argument("--n-frames", type=int, default=6, help="validation frames to plot")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "corpus":
        from training.corpus import build_corpus
        from training.stft import PROFILES, StftSettings

        source = corpus_source(args.source, args.input)
        sr, n_fft, hop = PROFILES[args.profile]
        stft = StftSettings(sample_rate=args.sample_rate or sr, n_fft=args.n_fft or n_fft,
                            hop_length=args.hop_length or hop)
        c = build_corpus(args.out, source=source, stft=stft, input=args.input,
                         soundfont=args.soundfont, scale=args.scale, programs=args.programs,
                         n_patches=args.n_patches, note_s=args.note_seconds,
                         tail_s=args.tail_seconds, gain=args.gain, silence_db=args.silence_db,
                         segment_seconds=args.segment_seconds, seed=args.seed, jobs=args.jobs)
        sp = c.meta["split"]
        print(f"corpus {args.out}: {c.meta['n_frames']} frames from {len(c.meta['patches'])} "
              f"patches (train {len(sp['train'])}, val {len(sp['val'])}, test {len(sp['test'])})")
    elif args.command == "train":
        from training.model import THESIS_DECODER, THESIS_ENCODER
        from training.train import TrainConfig, train

        model = {"append": args.append, "latent_dim": args.latent_dim, "bias": not args.no_bias,
                 "activation": args.activation, "latent_activation": args.latent_activation,
                 "output_activation": args.output_activation, "dropout": args.dropout,
                 "input_dropout": args.input_dropout, "conditioning": args.conditioning,
                 "pitch_decoder": args.pitch_decoder, "envelope": args.envelope,
                 "harmonic_floors": args.harmonic_floors,
                 "noise_scale": args.noise_scale,
                 "encoder_widths": list(THESIS_ENCODER) if args.encoder_widths == "thesis" else args.encoder_widths,
                 "decoder_widths": list(THESIS_DECODER) if args.decoder_widths == "thesis" else args.decoder_widths}
        if args.preset == "anne":
            # The thesis's ANNe: a sigmoid latent (knob gains scale values in 0..1, so a
            # gain always moves a neuron the same way) and a sigmoid output (frames are
            # normalised to max 1); no bias, so a silent frame stays silent through the
            # network and gains act as pure scalings of the code.
            model.update({"encoder_widths": [512, 256, 128], "latent_dim": 64,
                          "decoder_widths": [128, 256, 512], "latent_activation": "sigmoid",
                          "output_activation": "sigmoid", "bias": False})
        cfg = TrainConfig(corpus=args.corpus, out=args.out, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, l2=args.l2, loss=args.loss,
                          log_weight=args.log_weight, lsd_weight=args.lsd_weight, knob_weight=args.knob_weight,
                          knob_db=args.knob_db, knob_guard=args.knob_guard,
                          knob_hnr_percentile=args.knob_hnr_percentile, seed=args.seed, device=args.device,
                          threads=args.threads, patience=args.patience,
                          max_minutes=args.max_minutes, lr_decay=args.lr_decay,
                          epoch_frames=args.epoch_frames, init=args.init, model=model)
        train(cfg, progress=not args.no_progress)
    elif args.command == "export":
        from training.export import export_model

        meta = export_model(args.run, args.out, corpus=args.corpus,
                            description=args.description, tolerance=args.tolerance)
        print(f"exported {args.out}: latent_dim {meta['latent_dim']}, validation "
              f"{json.loads(meta['validation_metrics'])}")
    elif args.command == "report":
        from training.report import latent_map, write_report

        if not args.run and not args.model:
            raise CanneError("report needs --run RUN (training curves) and/or --model DIR (latent map)")
        files = write_report(args.run, args.out, corpus=args.corpus, n_frames=args.n_frames) \
            if args.run else []
        if args.model:
            files.append(latent_map(args.model))
        for f in files:
            print(f)
    return 0


def corpus_source(source: str | None, input_path: str | None) -> str:
    """``--source`` as meant: ``--input`` implies ``folder``; any other source with it is an error.

    (``--input DIR`` alone used to render the 128 GM programs of a SoundFont instead.)
    """
    if source is None:
        return "folder" if input_path else "soundfont"
    if input_path and source != "folder":
        raise CanneError(f"--input {input_path} is a folder of recordings, for --source folder; "
                         f"--source {source} does not read it (drop --input, or use --source folder)")
    return source


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except CanneError as exc:
        print(f"canne-train {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("canne-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
