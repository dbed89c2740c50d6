"""``canne``: command-line entry point (subcommands run, devices, learn, render)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from daemon.errors import CanneError

EXIT_CONFIG = 2


# -- render (engine helper) -----------------------------------------------------------
def add_render_parser(sub) -> None:
    from daemon.app import render

    p = sub.add_parser("render", parents=[_log_parent()], help="render a MIDI file to WAV/FLAC through the engine",
                       description="Play a MIDI file (notes, CC automation, pitch bend, sustain, program "
                                   "changes) through the same engine and mapping as 'canne run', to the end "
                                   "of the file; write WAV, FLAC, OGG or AIFF (by the extension of -o).")
    render.add_arguments(p)
    p.set_defaults(func=cmd_render)


def cmd_render(args) -> int:
    from daemon.app import render

    return render.run(args)


# -- run / devices / learn (daemon runtime) -------------------------------------------
def _latency(text: str):
    if text in ("low", "high"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--latency {text!r}: use low, high or seconds (e.g. 0.02)")
    if not 0 < value < 2:
        raise argparse.ArgumentTypeError(f"--latency {value}: seconds must be in (0, 2)")
    return value


def _ahead(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


_MODEL_HELP = ("model folder, decoder.onnx or model name (default: 'default', your own models "
               "folder first, then the shipped models; see docs/install.md)")
_MAPPING_HELP = ("mapping YAML file or name, e.g. korg_nanokontrol2 (default: 'default', your own "
                 "copy made by 'canne learn' first, then the shipped one)")


def resolve_model(spec: str | None) -> str:
    """``--model`` as a path: a folder/file given, a name (user folder, then shipped), or the default."""
    from daemon import paths

    return str(paths.find_model(spec) if spec else paths.default_model())


def resolve_mapping(spec: str | None) -> str | None:
    """``--mapping`` as a path; ``''`` means no mapping (None), ``None`` the default."""
    from daemon import paths

    if spec is None:
        return str(paths.default_mapping())
    if spec == "":
        return None
    return str(paths.find_mapping(spec))


def _add_midi_options(p, midi_in_help: str) -> None:
    """--midi-in, --no-virtual, --midi-api: the same for run, effect and learn."""
    p.add_argument("--midi-in", action="append", default=[], metavar="SUBSTR", help=midi_in_help)
    p.add_argument("--no-virtual", action="store_true", help="do not open the virtual input port 'CANNe'")
    p.add_argument("--midi-api", choices=["auto", "jack", "alsa", "coremidi", "windows"], default="auto",
                   help="MIDI system (default: auto = JACK if running, else the native one)")


def add_run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        parents=[_log_parent()],
        help="play live: MIDI in, audio out (supervised; restarts audio when the server returns)",
        description="Start the instrument. Ctrl-C / SIGTERM fade out and exit 0; SIGHUP reloads the mapping.",
    )
    p.add_argument("--model", default=None, metavar="DIR|NAME", help=_MODEL_HELP)
    p.add_argument("--mapping", default=None, metavar="YAML|NAME",
                   help=_MAPPING_HELP + "; reloaded when the file changes")
    _add_midi_options(p, "open MIDI inputs whose name contains SUBSTR (repeatable; default: all hardware inputs)")
    p.add_argument("--device", default=None, metavar="NAME|INDEX",
                   help="audio output device (name substring or index; default: JACK if running, else the system default)")
    p.add_argument("--sample-rate", type=float, default=None, metavar="HZ",
                   help="audio rate (default: the device's; the engine converts from the model's rate)")
    p.add_argument("--blocksize", type=_positive_int, default=0, metavar="FRAMES",
                   help="frames per audio callback (default 0: the host's, best under JACK)")
    p.add_argument("--latency", type=_latency, default="low", metavar="low|high|SECONDS",
                   help="PortAudio output latency (default: low)")
    p.add_argument("--polyphony", type=_positive_int, default=None, metavar="N",
                   help="voices (default: the mapping's, else the engine's)")
    p.add_argument("--osc-port", type=_port, default=None, metavar="N",
                   help="listen for OSC on this UDP port (docs/osc.md; default: the mapping's 'osc:' section, else off)")
    p.add_argument("--osc-host", default=None, metavar="ADDR",
                   help="address OSC listens on (default 127.0.0.1; another one is reachable from the network)")
    p.add_argument("--status", action="store_true",
                   help="print a status line every second: voices, CPU load, xruns, latent values")
    p.add_argument("--no-supervisor", action="store_true",
                   help="run the instrument in this process; on audio failure exit 75 (for systemd Restart=on-failure)")
    p.add_argument("--watchdog", type=float, default=2.0, metavar="SECONDS",
                   help="restart audio when no callback came for this long (default: %(default)s)")
    p.add_argument("--render-ahead", type=_ahead, default="auto", metavar="auto|FRAMES",
                   help="render FRAMES ahead of the audio callback on a thread of its own: a hop may "
                        "then take that long instead of one period (no dropouts under load or MIDI "
                        "floods) for that much more latency; 0: always in the callback (lowest "
                        "latency); auto: in the callback until the audio drops out 3 times within a "
                        "second, then 768 frames ahead (default: %(default)s; docs/daemon.md)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # started by the supervisor
    p.set_defaults(func=cmd_run)


def add_effect_parser(sub) -> None:
    p = sub.add_parser(
        "effect",
        parents=[_log_parent()],
        help="the ANNe effect live: audio in, knobs from MIDI, audio out (supervised)",
        description="Run the autoencoding sound effect on the audio input (JACK: the port "
                    "CANNe-audio:in_1). Knobs come from the mapping's effect_* controls; "
                    "Ctrl-C / SIGTERM fade out and exit 0; SIGHUP reloads the mapping. See docs/effect.md.",
    )
    p.add_argument("--model", default="anne", metavar="DIR|NAME",
                   help="model with encoder.onnx and decoder.onnx (default: anne)")
    p.add_argument("--mapping", default="anne", metavar="YAML|NAME",
                   help="mapping with an 'effect:' section and effect_* knobs (default: anne); "
                        "'' for none; reloaded when the file changes")
    _add_midi_options(p, "open MIDI inputs whose name contains SUBSTR (repeatable)")
    p.add_argument("--device", default=None, metavar="NAME|INDEX",
                   help="audio device with an input and an output (default: JACK if running)")
    p.add_argument("--sample-rate", type=float, default=None, metavar="HZ")
    p.add_argument("--blocksize", type=_positive_int, default=0, metavar="FRAMES")
    p.add_argument("--latency", type=_latency, default="low", metavar="low|high|SECONDS")
    p.add_argument("--status", action="store_true", help="print a status line every second")
    p.add_argument("--no-supervisor", action="store_true",
                   help="run in this process; on audio failure exit 75 (for systemd)")
    p.add_argument("--watchdog", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_effect, polyphony=None, osc_port=None, osc_host=None, effect=True)


def cmd_effect(args) -> int:
    return _supervised(args, "effect")


def add_process_parser(sub) -> None:
    from daemon.app import process

    p = sub.add_parser("process", parents=[_log_parent()],
                       help="the ANNe effect on a sound file, offline",
                       description="Run the autoencoding sound effect over IN.wav and write OUT "
                                   "(aligned with the input, same length and rate). See docs/effect.md.")
    process.add_arguments(p)
    p.set_defaults(func=lambda args: process.run(args))


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UDP port (1..65535)")
    return n


def _run_options(args):
    from daemon.app.runtime import RunOptions

    return RunOptions(
        model=resolve_model(args.model),
        mapping=resolve_mapping(args.mapping),
        midi_in=list(args.midi_in),
        virtual=not args.no_virtual,
        midi_api=args.midi_api,
        device=args.device,
        sample_rate=args.sample_rate,
        blocksize=args.blocksize,
        latency=args.latency,
        polyphony=args.polyphony,
        status=args.status,
        watchdog_s=args.watchdog,
        render_ahead=getattr(args, "render_ahead", 0),  # canne effect: none (duplex)
        osc_port=args.osc_port,
        osc_host=args.osc_host,
        effect=bool(getattr(args, "effect", False)),
    )


def cmd_run(args) -> int:
    return _supervised(args, "run")


def _supervised(args, command: str) -> int:
    """``canne run`` / ``canne effect``: here (the child, or --no-supervisor), or under the
    supervisor, which starts ``python -m daemon.app.cli COMMAND --child ...``."""
    if args.child or args.no_supervisor:
        return _run_instrument_here(args)
    from daemon.app.supervisor import Supervisor

    argv = list(args.argv)
    child_args = argv[argv.index(command) + 1:] if command in argv else []
    child_args = ["--log-level", args.log_level, *child_args]
    return Supervisor(child_args, watchdog_s=args.watchdog,
                      command=[sys.executable, "-m", "daemon.app.cli", command]).run()


def _run_instrument_here(args) -> int:
    """The instrument in this process (the supervisor's child, or ``--no-supervisor``).

    Until the stream runs, INFO lines are held back and any failure is one
    ``ERROR`` line with exit status 2 (the supervisor never restarts that).
    """
    import os

    from daemon.app import console as console_mod
    from daemon.app.supervisor import ENV_AFTER_SOUND, ChildLink

    console = console_mod.get()
    if console is not None and args.log_level != "DEBUG":
        console.hold()
    code = EXIT_CONFIG
    try:
        link = ChildLink.from_stdio() if args.child else None
        from daemon.app.runtime import run_instrument

        opts = _run_options(args)
        code = run_instrument(opts, link=link, after_sound=args.child and os.environ.get(ENV_AFTER_SOUND) == "1")
        return code
    except CanneError:
        raise
    except Exception as exc:  # an import or option failure before start-up: one line
        log = logging.getLogger("canne.run")
        log.error("start-up failed: %s: %s (run with -v DEBUG for the traceback)",
                  type(exc).__name__, (str(exc).splitlines() or [""])[0])
        log.debug("start-up traceback", exc_info=exc)
        return EXIT_CONFIG
    finally:
        if console is not None:
            console.flush_held(show=code == 0)


def add_devices_parser(sub) -> None:
    p = sub.add_parser("devices", parents=[_log_parent()], help="list MIDI input ports and audio output devices")
    p.set_defaults(func=cmd_devices)


def cmd_devices(args) -> int:  # noqa: ARG001
    from daemon.adapters.audio_output import list_audio_devices
    from daemon.adapters.midi_input import list_midi_inputs

    print("MIDI inputs (use --midi-api API --midi-in SUBSTR):")
    for api, ports in list_midi_inputs():
        if not ports:
            print(f"  [{api}] (no ports)")
        for port in ports:
            print(f"  [{api}] {port}")
    print("Audio devices (use --device INDEX or a name substring):")
    try:
        devices = list_audio_devices()
    except Exception as exc:
        print(f"  (PortAudio unavailable: {exc})")
        devices = []
    for d in devices:
        kind = []
        if d["outputs"]:
            kind.append(f"{d['outputs']} out")
        if d["inputs"]:
            kind.append(f"{d['inputs']} in")
        print(f"  {d['index']:>3}: {d['name']} ({d['hostapi']}; {', '.join(kind) or 'no channels'}; "
              f"{d['default_samplerate']:g} Hz)")
    if not any(d["outputs"] for d in devices):
        print("  no audio output device: start the JACK server or plug in a sound card")
    return 0


def add_learn_parser(sub) -> None:
    p = sub.add_parser("learn", parents=[_log_parent()], help="bind the next CC moved to TARGET and write the mapping YAML",
                       description="Bind the next control change moved to TARGET. A shipped mapping is never "
                                   "edited: the result goes to your own copy (same name, in your mappings "
                                   "folder), which 'canne run' then uses for that name. The controls that "
                                   "drove TARGET before are replaced, and listed.")
    p.add_argument("target", metavar="TARGET", help="e.g. latent.3, gain_db, shift_bins, attack_ms")
    p.add_argument("--mapping", default=None, metavar="YAML|NAME",
                   help="mapping to update: a file (edited in place unless shipped) or a name; a new name "
                        "creates it in your mappings folder (default: 'default', your copy of it)")
    _add_midi_options(p, "listen only to inputs whose name contains SUBSTR (default: all hardware inputs)")
    p.add_argument("--model", default=None, metavar="DIR|NAME",
                   help="validate the result against this model (default: the default model)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up when no CC arrives within this time (default: %(default)s)")
    p.set_defaults(func=cmd_learn)


def learn_destination(spec: str | None) -> tuple[str, str | None, str | None]:
    """Where ``canne learn --mapping SPEC`` writes: ``(path, source, note)``.

    A shipped mapping (installed or the checkout's ``mappings/``) is never edited:
    the binding goes to the performer's copy of the same name (``source`` = the
    shipped file, read while the copy does not exist yet). A name not found
    anywhere becomes a new file in the user folder; any other path is edited in
    place (created if missing).
    """
    from daemon import paths

    if spec is None:
        src = paths.default_mapping()
    else:
        try:
            src = paths.find_mapping(spec)
        except CanneError:  # not found: a new mapping
            parts = Path(spec).parts
            if len(parts) == 1:
                name = spec if spec.endswith((".yaml", ".yml")) else spec + ".yaml"
                dest = paths.user_dir("mappings") / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                return str(dest), None, f"new mapping {dest}"
            return str(Path(spec).expanduser()), None, None
    if not paths.is_shipped(src):
        return str(src), None, None
    dest = paths.user_copy_of(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    how = "editing your copy" if dest.exists() else "writing your copy"
    play = "canne run" if dest.stem == "default" else f"canne run --mapping {dest.stem}"
    return str(dest), str(src), (f"{src} is shipped and stays as it is; {how} {dest} "
                                 f"(played by '{play}')")


def cmd_learn(args) -> int:
    from daemon.app.runtime import learn_from_midi

    path, source, note = learn_destination(args.mapping)
    if note:
        print(note, file=sys.stderr, flush=True)
    return learn_from_midi(
        target=args.target,
        mapping_path=path,
        midi_api=args.midi_api,
        patterns=args.midi_in,
        virtual=not args.no_virtual,
        timeout_s=args.timeout,
        model_path=resolve_model(args.model),
        source=source,
    )


def _log_parent(default=argparse.SUPPRESS) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--log-level", default=default, type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (default: INFO)")
    return parent


# -- main -------------------------------------------------------------------------------
class _VersionAction(argparse.Action):
    """``--version``: one unwrapped line on stdout (argparse's own action wraps long lines)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


def version_text() -> str:
    """``canne 0.1.0 (Python 3.11.7; shipped data: /path/to/models)``."""
    import platform

    from daemon import __version__, paths

    try:
        from importlib.metadata import version

        v = version("canne-live")
    except Exception:  # running from a checkout that is not installed
        v = __version__
    return f"canne {v} (Python {platform.python_version()}; shipped models: {paths.shipped_dir('models')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canne", description="CANNe Live: a MIDI-controlled neural instrument.",
                                     parents=[_log_parent("INFO")])
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_parser(sub)
    add_devices_parser(sub)
    add_learn_parser(sub)
    add_render_parser(sub)
    add_effect_parser(sub)
    add_process_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A crash in a C extension (rtmidi, JACK, PortAudio, onnxruntime) prints the Python
    # stacks of every thread on stderr instead of dying without a word.
    import faulthandler

    faulthandler.enable(all_threads=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    from daemon.app import console

    console.install(getattr(logging, args.log_level))
    try:
        return int(args.func(args) or 0)
    except CanneError as exc:
        logging.getLogger("canne").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
