"""One flag, one meaning, across every command, bench and demo included: every parser is
walked, and each flag is checked against the vocabulary in cli/arguments.py."""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest

from longseq.bench import BENCHMARKS, bench_module, bench_parser
from longseq.cli.arguments import VOCABULARY, device
from longseq.cli.main import build_parser
from longseq.etl.spark_session import SparkConfig

# spellings that are gone (0.x): each meant something another flag now says
RETIRED = {"--out", "--ds", "--config", "--workdir", "--profiles", "--seeds", "--delay", "--max-lens",
           "--session-gap-minutes", "--latency-seconds"}
INTERNAL = {"--from-spark-submit", "--one", "--child-data"}  # set by longseq for its own child processes


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, and every benchmark's, by the command a user types."""
    main = build_parser()
    sub = next(a for a in main._actions if isinstance(a, argparse._SubParsersAction))
    found = {f"longseq {name}": p for name, p in sub.choices.items()}
    for name in BENCHMARKS:
        found[f"longseq bench {name}"] = bench_parser(name, None, bench_module(name).arguments)
    return found


def flags(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    return [(s, a) for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def kind(action: argparse.Action) -> tuple[str, str]:
    """What a flag's values are: the type of each (one value, or each of a comma-separated
    list), and whether it takes a value at all."""
    element = getattr(action.type, "element", action.type)
    return getattr(element, "__name__", "str") if element is not None else "str", type(action).__name__


def problems(commands: dict[str, argparse.ArgumentParser]) -> list[str]:
    found, uses = [], defaultdict(list)
    for command, parser in commands.items():
        for flag, action in flags(parser):
            uses[flag].append((command, action))
            if flag in RETIRED:
                found.append(f"{command} {flag}: a retired spelling")
            if flag not in INTERNAL and (not action.help or action.help == argparse.SUPPRESS):
                found.append(f"{command} {flag}: no help")
            if flag == "--device" and (action.type is not device or action.default not in (None, "auto")):
                found.append(f"{command} --device: not checked, or its default is not auto")
            if flag == "--master" and action.default not in (None, SparkConfig().master):
                found.append(f"{command} --master: default {action.default!r}, not {SparkConfig().master!r}")
    for flag, used in sorted(uses.items()):
        if len(used) > 1 and flag not in VOCABULARY and flag not in INTERNAL:
            found.append(f"{flag}: taken by {len(used)} commands but has no meaning in VOCABULARY")
        kinds = {kind(a) for _, a in used}
        if len(kinds) > 1:  # values of another type, or a switch beside a value: another meaning
            found.append(f"{flag}: used with {len(kinds)} meanings: " + "; ".join(f"{c} {kind(a)}" for c, a in used))
    return found


def test_every_flag_has_one_meaning_and_help():
    assert problems(parsers()) == []


def test_the_check_fails_on_a_flag_with_two_meanings_no_help_or_another_device_default():
    one, two = argparse.ArgumentParser(), argparse.ArgumentParser()
    one.add_argument("--max-len", type=int, metavar="EVENTS", help="history the build keeps")
    two.add_argument("--max-len", type=float, metavar="N", help="a serving cap")
    two.add_argument("--window", type=int)
    two.add_argument("--device", type=device, default="cpu", help="where")
    two.add_argument("--out", help="an old spelling")
    found = problems({"a": one, "b": two})
    assert any(p.startswith("--max-len: used with 2 meanings") for p in found)
    assert "b --window: no help" in found
    assert "b --device: not checked, or its default is not auto" in found
    assert "b --out: a retired spelling" in found


@pytest.mark.parametrize("command", sorted(parsers()))
def test_a_bad_argument_is_one_line(command, capsys):
    parser = parsers()[command]
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--no-such-flag"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(f"{command}: error: "), err


def test_a_benchmark_refuses_a_bad_value_in_one_line_through_the_command_line(capsys):
    from longseq.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "model", "--lengths", "512,many"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.splitlines() == [err] and err.startswith("longseq bench model: error: "), err
