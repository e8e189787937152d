"""The CLI as a person meets it: every command says what it does, every flag its default, and an
option out of bounds is named by the flag that was typed."""
from __future__ import annotations

import argparse

import pytest

from lipsync_triton.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _commands(child, (*path, name))


def test_every_command_has_a_description_and_every_flag_its_default():
    for path, parser in _commands(build_parser()):
        assert parser.description, path
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS) or action.required \
                    or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
                continue
            assert action.help, (path, action.option_strings)
            assert "(default: " in parser._get_formatter()._get_help_string(action), (path, action.option_strings)
        assert "(default: results/result_voice.mp4)" in text if path == ("generate",) else True


@pytest.mark.parametrize("argv, flag", [(["--resize-factor", "9"], "--resize-factor"), (["--pads", "0", "2000", "0", "0"], "--pads"),
                                        (["--detect-every", "0"], "--detect-every")])
def test_an_option_out_of_bounds_is_named_by_its_flag(argv, flag, capsys, tmp_path):
    code = main(["generate", "--face", str(tmp_path / "f.mp4"), "--audio", str(tmp_path / "a.wav"), *argv])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {flag}: ") and "option " not in line, line
