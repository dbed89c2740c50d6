"""Hostile mapping files: the only outcomes are a Mapping or one MappingError line.

Seeded mutations of the shipped mappings (text and bytes) plus the cases issue 9 names
(odd tags, merge keys, a 5,000-digit integer, nesting past 1,000 levels, NUL bytes,
over-long paths in ``programs``, FIFOs, ``/dev/zero``, huge files). An *escape* is any
other exception, a message of more than one line, or the loader's "please report"
fallback (a case nobody handled on purpose). Runs in a few seconds.
"""

from __future__ import annotations

import os
import random
import re
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.errors import MappingError  # noqa: E402
from daemon.control.mapping import MAX_MAPPING_BYTES, MAX_NESTING, Mapping, load_mapping, load_mapping_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "mappings").glob("*.yaml"))
SEED = 9
N_MUTANTS = 440


def outcome(load, source: str) -> str:
    """'ok', 'refused', or 'ESCAPE: ...' (what went wrong)."""
    try:
        result = load()
    except MappingError as exc:
        msg = str(exc)
        if len(msg.splitlines()) != 1 or msg != msg.strip():
            return f"ESCAPE: not one line: {msg!r}"
        if "please report" in msg:
            return f"ESCAPE: unhandled case behind the fallback: {msg}"
        if not re.match(rf"^{re.escape(source)}(:\d+)?: \S", msg):
            return f"ESCAPE: does not start with the file (and line): {msg!r}"
        if len(msg) > 1000:
            return f"ESCAPE: message of {len(msg)} characters: {msg[:200]!r}"
        return "refused"
    except Exception as exc:  # RecursionError, ValueError, KeyError, OSError, ...
        return f"ESCAPE: {type(exc).__name__}: {str(exc)[:200]!r}"
    if not isinstance(result, Mapping):
        return f"ESCAPE: returned {type(result).__name__}"
    return "ok"


# --------------------------------------------------------------------------- named cases
DEEP = 1500
NAMED = {
    "int-tag-abc": "controls:\n  - {cc: !!int abc, neuron: 0}\n",
    "bool-tag-maybe": "controls:\n  - {cc: 1, neuron: 0, invert: !!bool maybe}\n",
    "timestamp-tag-x": "name: !!timestamp x\n",
    "float-tag-x": "controls:\n  - {cc: 1, neuron: 0, range: [!!float x, 1]}\n",
    "binary-tag-bad": "name: !!binary '%%%'\n",
    "unknown-tag": "name: !foo bar\n",
    "unknown-tag-on-key": "!foo name: bar\n",
    "python-name-tag": "name: !!python/name:os.system\n",
    "python-apply-tag": "name: !!python/object/apply:os.system [echo pwned]\n",
    "python-object-tag-section": "controls: !!python/object:os.system {}\n",
    "set-tag": "name: !!set {a, b}\n",
    "omap-tag-on-scalar": "name: !!omap x\n",
    "merge-key": "controls:\n  - &k {cc: 1, neuron: 0}\n  - {<<: *k, cc: 2}\n",
    "merge-key-top": "base: &b {name: x}\n<<: *b\n",
    "merge-key-list": "notes: {<<: [{polyphony: 2}], channel: 1}\n",
    "int-5000-digits": "controls:\n  - {cc: " + "9" * 5000 + ", neuron: 0}\n",
    "negative-int-5000-digits": "pitch_bend: -" + "1" * 5000 + "\n",
    "hex-5000-digits": "sustain: 0x" + "f" * 5000 + "\n",
    "sexagesimal-long": "controls:\n  - {cc: 1" + ":59" * 30000 + ", neuron: 0}\n",
    "float-5000-digits": "pitch_bend: 1." + "1" * 5000 + "\n",
    "program-key-5000-digits": "programs:\n  ? " + "7" * 5000 + "\n  : {mapping: x.yaml}\n",
    "nesting-flow-1500": "name: " + "[" * DEEP + "]" * DEEP + "\n",
    "nesting-flow-map-1500": "controls: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n",
    "nesting-block-1500": "- " * DEEP + "x\n",
    "nesting-block-map-1200": "".join(" " * i + f"k{i}:\n" for i in range(1200)) + " " * 1200 + "x: 1\n",
    "nesting-just-over-limit": "name: " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "\n",
    "nul-byte-value": "name: a\x00b\n",
    "nul-byte-start": "\x00",
    "nul-escape-in-quoted": 'name: "a\\0b"\n',
    "control-char": "name: a\x07b\n",
    "nel-and-line-separator": 'name: "a\\Nb\\Lc"\ncontrols:\n  - {cc: 1, neuron: 9}\n',
    "program-path-5000": "programs:\n  1: {model: " + "a" * 5000 + "}\n",
    "program-path-component-300": "programs:\n  1: {mapping: " + "b" * 300 + ".yaml}\n",
    "program-path-many-components": "programs:\n  1: {mapping: " + "c/" * 500 + "x.yaml}\n",
    "program-path-nul": 'programs:\n  1: {mapping: "a\\0b.yaml"}\n',
    "program-path-dev-zero": "programs:\n  1: {mapping: /dev/zero}\n",
    "program-path-folder": "programs:\n  1: {mapping: /}\n",
    "program-path-empty": "programs:\n  1: {mapping: ''}\n",
    "program-path-list": "programs:\n  1: {mapping: [a, b]}\n",
    "alias-undefined": "name: *nowhere\n",
    "alias-recursive": "controls: &a [*a]\n",
    "alias-recursive-map": "notes: &n {channel: *n}\n",
    "billion-laughs": "a: &a [x, x, x, x, x, x, x, x, x]\n"
                      + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
                                for i in range(8)),
    "key-is-list": "? [a]\n: 1\n",
    "key-is-section": "? {a: 1}\n: 1\n",
    "key-null": "~: 1\n",
    "duplicate-key": "name: a\nname: b\n",
    "two-documents": "name: a\n---\nname: b\n",
    "directive-only": "%YAML 1.1\n---\n",
    "tab-indent": "controls:\n\t- {cc: 1, neuron: 0}\n",
    "unclosed-flow": "controls: [{cc: 1, neuron: 0\n",
    "unclosed-quote": 'name: "abc\n',
    "only-comment": "# nothing\n",
    "empty-text": "",
    "top-is-scalar": "hello\n",
    "top-is-list": "- 1\n- 2\n",
    "nan-range": "controls:\n  - {cc: 1, neuron: 0, range: [.nan, 1]}\n",
    "inf-bend": "pitch_bend: .inf\n",
    "float-overflow": "pitch_bend: 1e999\n",
    "channel-list-300": "channel: [" + ", ".join(["1"] * 300) + "]\n",
    "huge-list": "controls: [" + ", ".join(["{cc: 1, neuron: 0}"] * 5000) + "]\n",
    "long-label": "controls:\n  - {cc: 1, neuron: 0, label: '" + "x" * 100000 + "'}\n",
    "long-key": "x" * 100000 + ": 1\n",
    "bom": "\ufeffname: a\n",
    "surrogate-escape": 'name: "\\ud800"\n',
    "valid-tagged": "version: !!int 1\nname: !!str 12\ncontrols:\n  - {cc: !!int 1, neuron: 0, invert: !!bool true}\n",
}

NAMED_VALID = {"long-label", "bom", "valid-tagged"}


def test_named_cases_are_refused_or_loaded_cleanly(model, tmp_path):
    escapes = {}
    outcomes = {}
    for name, text in NAMED.items():
        got = outcome(lambda: load_mapping_text(text, model, source="fuzz.yaml", path=tmp_path / "fuzz.yaml"),
                      "fuzz.yaml")
        outcomes[name] = got
        if got.startswith("ESCAPE"):
            escapes[name] = got
    assert not escapes, escapes
    # and every case but the valid files is refused
    assert {n for n, o in outcomes.items() if o == "ok"} == NAMED_VALID, outcomes


NAMED_MESSAGES = [
    (NAMED["int-tag-abc"], "fuzz.yaml:2: controls[0].cc: cannot read the value as !!int (got 'abc')"),
    (NAMED["bool-tag-maybe"], "fuzz.yaml:2: controls[0].invert: cannot read the value as !!bool"),
    (NAMED["timestamp-tag-x"], "fuzz.yaml:1: name: cannot read the value as !!timestamp"),
    (NAMED["unknown-tag"], "fuzz.yaml:1: name: unknown YAML tag '!foo'"),
    (NAMED["python-name-tag"], "fuzz.yaml:1: name: unknown YAML tag"),
    (NAMED["merge-key"], "fuzz.yaml:3: controls[1].<<: merge keys ('<<') are not supported"),
    (NAMED["int-5000-digits"], "fuzz.yaml:2: controls[0].cc: number too long (5000 characters); allowed: 0..127"),
    (NAMED["nesting-flow-1500"], f"fuzz.yaml:1: nested more than {MAX_NESTING} levels deep"),
    (NAMED["nesting-block-1500"], f"fuzz.yaml:1: nested more than {MAX_NESTING} levels deep"),
    (NAMED["nesting-block-map-1200"], f"fuzz.yaml:{MAX_NESTING + 1}: nested more than {MAX_NESTING} levels deep"),
    (NAMED["nul-byte-value"], "fuzz.yaml:1: character U+0000 at column 8 is not allowed"),
    (NAMED["program-path-5000"], "fuzz.yaml:2: programs.1.model: path too long (5000 characters)"),
    (NAMED["program-path-nul"], "fuzz.yaml:2: programs.1.mapping: the text contains a NUL character"),
    (NAMED["program-path-dev-zero"], "fuzz.yaml:2: programs.1.mapping: not a regular file"),
    (NAMED["program-path-component-300"], "fuzz.yaml:2: programs.1.mapping: no such file"),
    (NAMED["huge-list"], "fuzz.yaml:1: controls: too many controls (5000); allowed: at most 2048"),
    (NAMED["channel-list-300"], "fuzz.yaml:1: channel: a list of 300 channels; allowed: 1..16"),
]


@pytest.mark.parametrize("text,fragment", NAMED_MESSAGES, ids=[f[1][10:50] for f in NAMED_MESSAGES])
def test_named_cases_say_what_is_wrong(model, tmp_path, text, fragment):
    with pytest.raises(MappingError) as info:
        load_mapping_text(text, model, source="fuzz.yaml", path=tmp_path / "fuzz.yaml")
    assert str(info.value).startswith(fragment), str(info.value)


def test_nesting_is_limited_without_libyaml_too(model, monkeypatch):
    """The pure-Python loader (no libyaml) refuses deep nesting the same way."""
    import daemon.control.mapping

    monkeypatch.setattr(daemon.control.mapping, "_CLoader", None)
    for name in ("nesting-flow-1500", "nesting-block-1500", "nesting-flow-map-1500", "nesting-block-map-1200"):
        with pytest.raises(MappingError, match="nested more than"):
            load_mapping_text(NAMED[name], model, source="fuzz.yaml")
    good = (REPO / "mappings" / "default.yaml").read_text()
    assert load_mapping_text(good, model, source="fuzz.yaml").name


# --------------------------------------------------------------------------- files
def _fifo(p):
    os.mkfifo(p)


def _dev_zero(p):
    p.symlink_to("/dev/zero")


def _folder(p):
    p.mkdir()


def _too_big(p):
    line = "# " + "x" * 1021 + "\n"  # a valid YAML comment, 1 KiB a line
    p.write_text("name: big\n" + line * (MAX_MAPPING_BYTES // len(line) + 1))


def _sparse_60mb(p):
    with open(p, "wb") as f:
        f.truncate(60 << 20)


def _not_utf8(p):
    p.write_bytes(b"name: ok\ncontrols:\n  - {cc: 1, neuron: 0, label: \"\xff\xfe\"}\n")


def _symlink_loop(p):
    p.symlink_to(p)


def _empty(p):
    p.write_bytes(b"")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
@pytest.mark.parametrize("make,fragment", [
    (_fifo, "is a FIFO (named pipe), not a mapping file"),
    (_dev_zero, "is a character device, not a mapping file"),
    (_folder, "is a folder, not a mapping file"),
    (_too_big, "the mapping file is too large (1 MiB); the limit is 1 MiB"),
    (_sparse_60mb, "the mapping file is too large (60 MiB); the limit is 1 MiB"),
    (_not_utf8, ":3: not UTF-8 text (byte 0xff)"),
    (_symlink_loop, "cannot read the mapping file: Too many levels of symbolic links"),
    (_empty, ":1: the mapping file is empty"),
], ids=["fifo", "dev-zero", "folder", "over-1MiB", "60MB", "not-utf8", "symlink-loop", "empty"])
def test_files_that_are_not_mappings_are_refused_without_reading(model, tmp_path, make, fragment):
    path = tmp_path / "live.yaml"
    make(path)
    got = []

    def run():  # a FIFO must not block: bound the wait (liveness, not speed)
        got.append(outcome(lambda: load_mapping(path, model), str(path)))
        try:
            load_mapping(path, model)
        except MappingError as exc:
            got.append(str(exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30.0)
    assert not t.is_alive(), "load_mapping blocked"
    assert got[0] == "refused", got
    assert got[1].startswith(str(path)) and fragment in got[1], got[1]


@pytest.mark.parametrize("path", ["x" * 5000 + ".yaml", "a\x00b.yaml", "/" + "d/" * 3000 + "m.yaml"],
                         ids=["5000-char-name", "nul", "6000-char-path"])
def test_odd_paths_are_refused_in_one_line(model, path):
    with pytest.raises(MappingError) as info:
        load_mapping(path, model)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and len(msg) < 400 and "cannot read the mapping file" in msg, msg


# --------------------------------------------------------------------------- mutations
ODD_VALUES = [
    "!!int abc", "!!bool maybe", "!!timestamp x", "!!float nope", "!foo bar", "!!python/name:os.system",
    "!!python/object/apply:os.system [ls]", "*undefined", "&a 1", "9" * 5000, "0x" + "f" * 300, "1e999",
    ".nan", "-.inf", "~", "''", "[]", "{}", "[1, [2, [3]]]", "\x00", '"\\0"', '"\\x85"', "yes", "no", "on",
    "2001-12-14", "1:2:3", "0b1010", "0o17", "-0", "+5", "1_000", "12345678901234567890", "!!binary aGVsbG8=",
    "!!set {a, b}", "{<<: {cc: 1}}", "[" * 1200 + "]" * 1200, "{a: " * 300 + "1" + "}" * 300, "'unterminated",
    "|\n  block\n", ">-\n  folded\n", "-1", "128", "3.5", "0", "64", "all", "[1, 17]", "semitones", "14bit",
    "signed_bit", "exp", "-4096", "4097", "{cc: 1}", "- x", "? x", "%", "@", "`", "a: b: c", "\ufeff", "\u2028",
    "x" * 20000,
]
ODD_LINES = [
    "<<: *a", "? [a]\n: 1", "---", "...", "%YAML 1.1", "  - {cc: 1, neuron: 0, <<: {x: 1}}",
    "!!python/object:os.system {}", "programs: {1: {mapping: " + "p" * 5000 + "}}",
    "programs: {1: {mapping: \"a\\0b\"}}", "programs: {1: {model: /dev/zero}}", "programs: {200: {mapping: x}}",
    "controls: [" + "[" * 2000 + "]" * 2000 + "]", "&x name: a", "name: *x", "\t- x", "- " * 1500 + "x",
    "notes: {polyphony: " + "1" * 4400 + "}", "sustain: !!int " + "7" * 100,
]
CHARS = ":{}[],&*!|>'\"%@`#-?\t\n \x00\x01\x7f\x85\u2028\ufeff\ud800é9aZ."


def mutate(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:  # an odd value after a colon
            line = lines[i]
            k = line.find(": ")
            if k >= 0:
                end = line.find(",", k + 2)
                end = len(line) if end < 0 or rng.random() < 0.5 else end
                lines[i] = line[: k + 2] + rng.choice(ODD_VALUES) + line[end:]
            else:
                lines[i] = line + ": " + rng.choice(ODD_VALUES)
        elif op == 1 and lines:
            del lines[i]
        elif op == 2 and lines:
            lines.insert(i, lines[i])  # duplicate keys / controls
        elif op == 3:
            lines.insert(i, rng.choice(ODD_LINES))
        elif op == 4 and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 5 and lines:
            lines[i] = rng.choice(["", " ", "  ", "\t", "    "]) + lines[i].lstrip(" ") if rng.random() < 0.5 \
                else lines[i][rng.randint(0, 3):]
        elif op == 6:
            joined = "\n".join(lines)
            lines = joined[: rng.randrange(len(joined) + 1)].split("\n")
        elif op == 7 and lines:  # a few random characters in place
            line = list(lines[i])
            for _ in range(rng.randint(1, 4)):
                pos = rng.randint(0, len(line))
                r = rng.random()
                if r < 0.4:
                    line.insert(pos, rng.choice(CHARS))
                elif r < 0.7 and line:
                    del line[min(pos, len(line) - 1)]
                elif line:
                    line[min(pos, len(line) - 1)] = rng.choice(CHARS)
            lines[i] = "".join(line)
        elif op == 8 and lines:  # nesting around a value
            n = rng.choice([2, 10, MAX_NESTING, 1000, 3000])
            line = lines[i]
            k = line.find(": ")
            if k >= 0:
                lines[i] = line[: k + 2] + "[" * n + line[k + 2:] + "]" * n
        elif op == 9:
            lines.append(rng.choice(ODD_LINES))
    return "\n".join(lines)


def mutants():
    rng = random.Random(SEED)
    texts = [p.read_text(encoding="utf-8") for p in SHIPPED]
    out = []
    for k in range(N_MUTANTS):
        text = mutate(rng, texts[k % len(texts)])
        if k % 5 == 4:  # bytes: flip a few bytes (invalid UTF-8, stray controls), loaded from a file
            data = bytearray(text.encode("utf-8", "surrogatepass"))
            for _ in range(rng.randint(1, 3)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            out.append(bytes(data))
        else:
            out.append(text)
    return out


def test_mutated_shipped_mappings_never_escape(model, tmp_path):
    assert len(SHIPPED) >= 4
    cases = mutants()
    counts = {"ok": 0, "refused": 0}
    escapes = []
    path = tmp_path / "fuzz.yaml"
    for k, case in enumerate(cases):
        if isinstance(case, bytes):
            path.write_bytes(case)
            got = outcome(lambda: load_mapping(path, model), str(path))
        else:
            got = outcome(lambda: load_mapping_text(case, model, source="fuzz.yaml", path=path), "fuzz.yaml")
        if got.startswith("ESCAPE"):
            escapes.append((k, got))
        else:
            counts[got] += 1
    total = len(cases) + len(NAMED)
    print(f"mapping fuzz: {len(cases)} mutants + {len(NAMED)} named = {total} cases, {counts}, "
          f"{len(escapes)} escapes")
    assert total >= 400
    assert not escapes, escapes[:10]
    # the mutations are not all trivially broken, nor all harmless
    assert counts["ok"] >= 30 and counts["refused"] >= 200, counts


def test_mutants_through_the_hot_reloader_keep_the_old_mapping(model, tmp_path):
    """Every refused edit leaves the playing mapping in force; every valid one is applied."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_mapper import RecordingEngine

    from daemon.control.mapper import Mapper
    from daemon.control.reload import MappingReloader

    path = tmp_path / "live.yaml"
    path.write_text("takeover: jump\ncontrols:\n  - {cc: 1, neuron: 0}\n")
    mapper = Mapper(load_mapping(path, model), RecordingEngine(model))
    reloader = MappingReloader(path, model, mapper)
    previous = path.read_bytes()
    outcomes = {"applied": 0, "refused": 0}
    for k, case in enumerate(mutants()[:80]):
        before = mapper.mapping
        data = case if isinstance(case, bytes) else case.encode("utf-8", "surrogatepass")
        if data == previous:
            continue  # the same text again is not a reload
        previous = data
        path.write_bytes(data)
        os.utime(path, ns=(10**18 + k, 10**18 + k))  # a new mtime each time, whatever the clock
        failures = reloader.failures
        reloader.poll()
        assert reloader.wait_idle(30.0)
        applied = reloader.poll()
        if applied:
            assert mapper.mapping is not before and reloader.last_error is None
            outcomes["applied"] += 1
        else:
            assert mapper.mapping is before and reloader.failures == failures + 1, k
            outcomes["refused"] += 1
    assert outcomes["applied"] >= 5 and outcomes["refused"] >= 40, outcomes
