"""The `abdoseg` dispatcher: each subcommand reaches its owner with its arguments; a missing extra is one line."""
import pytest

from inference import command


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
    assert {"predict", "evaluate", "efficiency", "train", "export"} <= set(command.SUBCOMMANDS)


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
