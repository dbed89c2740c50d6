"""``canne-train``: build a corpus, train, export and report, one subcommand per step.

    canne-train corpus --source soundfont --scale one-octave --out cache/fluidr3-one-octave
    canne-train train  --corpus cache/fluidr3-one-octave --out runs/default
    canne-train export --run runs/default --out models/default
    canne-train report --run runs/default
"""

from __future__ import annotations

import argparse
import json
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


def _parser() -> argparse.ArgumentParser:
    from training.corpus import SOURCES
    from training.model import ACTIVATIONS, APPEND_OPTIONS
    from training.scales import SCALES
    from training.stft import PROFILES
    from training.train import LOSSES

    p = argparse.ArgumentParser(prog="canne-train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("corpus", help="render or read audio into normalised STFT frames")
    c.add_argument("--source", choices=SOURCES, default="soundfont")
    c.add_argument("--out", required=True, help="corpus directory to write (e.g. cache/mine)")
    c.add_argument("--input", help="folder (or file) of recordings for --source folder")
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
                   help="cut recordings into patches of this length (0: one patch per file)")
    c.add_argument("--seed", type=int, default=0, help="split (and synth) seed")
    c.add_argument("--jobs", type=int, default=2, help="parallel FluidSynth renders")

    t = sub.add_parser("train", help="train an autoencoder on a corpus")
    t.add_argument("--corpus", required=True)
    t.add_argument("--out", required=True, help="run directory (checkpoints, logs)")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=200)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-decay", type=float, default=1.0, help="learning-rate factor per epoch")
    t.add_argument("--l2", type=float, default=1e-10, help="lambda of the ||theta||^2 term")
    t.add_argument("--loss", choices=LOSSES, default="sc_mse")
    t.add_argument("--log-weight", type=float, default=0.0,
                   help="weight of an added log-magnitude L1 term (0: off)")
    t.add_argument("--append", choices=APPEND_OPTIONS, default="none")
    t.add_argument("--encoder-widths", type=_int_list, default=None)
    t.add_argument("--decoder-widths", type=_int_list, default=None)
    t.add_argument("--latent-dim", type=int, default=8)
    t.add_argument("--no-bias", action="store_true")
    t.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    t.add_argument("--latent-activation", choices=ACTIVATIONS, default="linear")
    t.add_argument("--output-activation", choices=("relu", "softplus", "sigmoid"), default="relu")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="dropout after hidden layers >= 256 wide (training only; 0: off)")
    t.add_argument("--input-dropout", type=float, default=0.0,
                   help="denoising: fraction of input bins zeroed while training (0: off)")
    t.add_argument("--conditioning", choices=("none", "pitch"), default="none",
                   help="pitch: the decoder takes (z, pitch) - model format 2 (needs a corpus "
                        "with pitch labels; trains on its voiced frames)")
    t.add_argument("--pitch-decoder", choices=("harmonic", "mlp"), default="harmonic",
                   help="conditioned decoder: envelope x harmonic comb + noise, or a plain MLP")
    t.add_argument("--epoch-frames", type=int, default=0,
                   help="frames drawn afresh for each epoch (0: the whole training split)")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--patience", type=int, default=0, help="early stop after N epochs without "
                   "validation improvement (0: off)")
    t.add_argument("--max-minutes", type=float, default=0.0, help="stop before this budget (0: off)")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("export", help="write decoder.onnx, encoder.onnx and config.json")
    e.add_argument("--run", required=True, help="run directory or checkpoint file")
    e.add_argument("--out", required=True, help="model directory, e.g. models/default")
    e.add_argument("--corpus", help="corpus directory (default: the one it was trained on)")
    e.add_argument("--description", help="corpus description for the metadata")
    e.add_argument("--tolerance", type=float, default=1e-4)

    r = sub.add_parser("report", help="PNG figures: loss curves, reconstructions, latents")
    r.add_argument("--run", required=True)
    r.add_argument("--out", help="folder for the PNGs (default: RUN/report)")
    r.add_argument("--corpus", help="corpus directory (default: the one it was trained on)")
    r.add_argument("--n-frames", type=int, default=6, help="validation frames to plot")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "corpus":
        from training.corpus import build_corpus
        from training.stft import PROFILES, StftSettings

        sr, n_fft, hop = PROFILES[args.profile]
        stft = StftSettings(sample_rate=args.sample_rate or sr, n_fft=args.n_fft or n_fft,
                            hop_length=args.hop_length or hop)
        c = build_corpus(args.out, source=args.source, stft=stft, input=args.input,
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
                 "pitch_decoder": args.pitch_decoder,
                 "encoder_widths": args.encoder_widths or list(THESIS_ENCODER),
                 "decoder_widths": args.decoder_widths or list(THESIS_DECODER)}
        cfg = TrainConfig(corpus=args.corpus, out=args.out, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, l2=args.l2, loss=args.loss,
                          log_weight=args.log_weight, seed=args.seed, device=args.device,
                          threads=args.threads, patience=args.patience,
                          max_minutes=args.max_minutes, lr_decay=args.lr_decay,
                          epoch_frames=args.epoch_frames, model=model)
        train(cfg, progress=not args.no_progress)
    elif args.command == "export":
        from training.export import export_model

        meta = export_model(args.run, args.out, corpus=args.corpus,
                            description=args.description, tolerance=args.tolerance)
        print(f"exported {args.out}: latent_dim {meta['latent_dim']}, validation "
              f"{json.loads(meta['validation_metrics'])}")
    elif args.command == "report":
        from training.report import write_report

        files = write_report(args.run, args.out, corpus=args.corpus, n_frames=args.n_frames)
        for f in files:
            print(f)
    return 0


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
