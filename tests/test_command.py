"""The `abdoseg` command: one registry of subcommands, each reaching its owner with its arguments and naming itself
in its usage line; the README's table lists exactly the registered ones; a missing extra is one line."""
import re

import pytest

from abdoseg import command
from tests.helpers import ROOT


def test_subcommands_reach_their_owner_with_the_owners_subcommand(monkeypatch):
    seen = {}

    def fake_load(sub):
        def entry(argv):
            seen[sub.module] = list(argv)
            return 0
        return entry

    monkeypatch.setattr(command, "_load", fake_load)
    for name, sub in command.SUBCOMMANDS.items():
        assert command.main([name, "--x", "1"]) == 0
        assert seen.pop(sub.module) == [*sub.prefix, "--x", "1"]
    assert {"predict", "evaluate", "efficiency", "cohort", "train", "export"} <= set(command.SUBCOMMANDS)


def test_the_readme_table_lists_exactly_the_registered_subcommands():
    rows = re.findall(r"^\| `abdoseg ([\w-]+)` \|", (ROOT / "README.md").read_text(), re.M)
    assert rows == list(command.SUBCOMMANDS)


@pytest.mark.parametrize("name", list(command.SUBCOMMANDS))
def test_each_subcommands_usage_line_names_it(name, capsys):
    with pytest.raises(SystemExit) as e:
        command.main([name, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: abdoseg {name} ")


def test_only_predict_is_a_cold_start():
    assert [name for name in command.SUBCOMMANDS if command.is_cold_start([name])] == ["predict"]
    assert not command.is_cold_start([]) and not command.is_cold_start(["--help"])


def test_missing_extra_names_it(monkeypatch, capsys):
    def needs_scipy(argv):
        raise ModuleNotFoundError("No module named 'scipy'", name="scipy")

    monkeypatch.setattr(command, "_load", lambda s: needs_scipy)
    assert command.main(["evaluate", "--pred", "a", "--gt", "b"]) == 2
    assert capsys.readouterr().err.strip() == ("abdoseg evaluate: missing module scipy; install it with: "
                                               "pip install 'abdoseg[eval]'")


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        command.main(["segment"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
