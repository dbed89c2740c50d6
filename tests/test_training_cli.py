"""canne-train's command line: defaults = the shipped recipe, --input means recordings."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from training import cli

REPO = Path(__file__).resolve().parent.parent

#: Options of the recipe that are a machine budget, not part of the recipe's result, and
#: the options of a fine-tuning stage that belong to that stage only (where it starts
#: from, its learning rate, its seed, its patience, and the knob-contrast terms the last
#: stage adds to an already trained model).
MACHINE_OPTIONS = {"--max-minutes", "--threads", "--corpus", "--out", "--init", "--lr", "--seed",
                   "--patience", "--knob-weight", "--knob-db", "--knob-guard",
                   "--knob-hnr-percentile"}


def _recipe_train_options() -> dict[str, str]:
    """The options of the last ``canne-train train`` command (the stage that made the shipped
    weights) in models/README.md's first "Reproduce" block (the default model's)."""
    text = (REPO / "models" / "README.md").read_text()
    block = text.split("## Reproduce", 1)[1].split("```", 2)[1]
    command = re.findall(r"canne-train train(.*?)(?:\n(?!\s)|\Z)", block.replace("\\\n", " "), re.S)[-1]
    words = shlex.split(command.split("#")[0])
    out, i = {}, 0
    while i < len(words):
        if words[i].startswith("--"):
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                out[words[i]] = words[i + 1]
                i += 2
                continue
            out[words[i]] = ""
        i += 1
    return out


def test_train_defaults_are_the_shipped_recipe():
    recipe = _recipe_train_options()
    assert "--encoder-widths" in recipe, recipe  # the parse found the command
    given = ["train", "--corpus", "c", "--out", "o"]
    plain = cli._parser().parse_args(given)
    explicit = cli._parser().parse_args(
        given + [w for k, v in recipe.items() if k not in MACHINE_OPTIONS for w in ((k, v) if v else (k,))])
    for option in recipe:
        if option in MACHINE_OPTIONS:
            continue
        dest = option.lstrip("-").replace("-", "_")
        assert getattr(plain, dest) == getattr(explicit, dest), f"default of {option} is not the recipe's"


def test_train_uses_every_core_and_thesis_widths_stay_reachable():
    args = cli._parser().parse_args(["train", "--corpus", "c", "--out", "o", "--encoder-widths", "thesis"])
    assert args.threads == cli.all_cores() >= 1
    assert args.encoder_widths == "thesis"


def test_corpus_input_means_a_folder_of_recordings(tmp_path, capsys):
    """--input without --source reads the folder (here: empty, so 'no audio files'),
    instead of rendering 128 GM programs from a SoundFont."""
    (tmp_path / "empty").mkdir()
    rc = cli.main(["corpus", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no audio files" in err[0], err


@pytest.mark.parametrize("source", ["soundfont", "synth"])
def test_corpus_input_with_another_source_is_refused(tmp_path, capsys, source):
    rc = cli.main(["corpus", "--source", source, "--input", str(tmp_path), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "--source folder" in err[0], err
    assert not (tmp_path / "c").exists()


def test_corpus_source_rule():
    assert cli.corpus_source(None, None) == "soundfont"
    assert cli.corpus_source(None, "rec") == "folder"
    assert cli.corpus_source("folder", "rec") == "folder"
    assert cli.corpus_source("synth", None) == "synth"
