"""The CLI explains itself and drives the data lifecycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from zmlops.cli import cli, main

pytestmark = pytest.mark.unit


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        found += _commands(command, (*path, name)) if isinstance(command, click.Group) else [(*path, name)]
    return found


def test_every_command_has_help_that_explains_it(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(cli)
    assert ("privacy", "rekey", "start") in commands and ("data", "ingest") in commands and len(commands) > 40
    for argv in commands:
        assert main([*argv, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"Usage: zm {' '.join(argv)}".rstrip()), (argv, out)
        summary = out.split("\n\n")[1].strip() if "\n\n" in out else ""
        assert len(summary) > 20, (argv, out)  # a sentence of what it does, not the bare usage line


@pytest.mark.parametrize("module", ["demos", "benchmarks"])
def test_the_tools_outside_the_package_have_help(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Demos and benchmarks are not in the installed package (nor in the images): `python -m demos`, `-m benchmarks`."""
    import importlib

    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"{module}.__main__").main(["--help"])
    assert exit_.value.code == 0 and f"usage: python -m {module}" in capsys.readouterr().out


def test_bad_scenario_is_a_clear_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["data", "simulate", "--out", "x", "--then", "8:meteor"])
    assert exit_.value.code == 2
    assert "WEEKS:SCENARIO" in capsys.readouterr().err


@pytest.mark.integration
def test_ingest_then_versions_through_the_installed_entry_point(tmp_path: Path) -> None:
    zm = Path(sys.executable).parent / "zm"
    env = {"ZM_HOME": str(tmp_path / "zm"), "PATH": "/usr/bin:/bin"}
    args = ["--customers", "100", "--products", "50", "--weeks", "20"]
    done = subprocess.run([str(zm), "data", "ingest", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "v1 is good" in done.stdout
    listing = subprocess.run([str(zm), "data", "versions"], env=env, capture_output=True, text=True)
    assert "v1" in listing.stdout and "good" in listing.stdout
    missing = subprocess.run(
        [str(zm), "data", "fetch", "v7", str(tmp_path / "x")], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr and "v1" in missing.stderr  # names the versions that exist


def test_a_new_key_is_accepted_by_the_entry_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from zmlops import auth

    assert main(["auth", "new-key", "shop", "--scope", "predict", "--scope", "metrics"]) == 0
    key_line, entry_line = capsys.readouterr().out.strip().splitlines()
    key, entry = key_line.rsplit(" ", 1)[1], json.loads(entry_line.split(": ", 1)[1])
    assert entry["sha256"] == auth.digest(key) and entry["scopes"] == ["predict", "metrics"] and key not in entry_line


def test_pushgateway_users_prints_passwords_its_userlist_admits(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed userlist checks each printed password (bcrypt), and only the pushers are in group pushers."""
    import bcrypt

    assert main(["auth", "pushgateway-users", "monitoring-2", "prometheus-2", "--pusher", "monitoring-2"]) == 0
    out = capsys.readouterr().out
    passwords = dict(line.removeprefix("password of ").split(" (not stored anywhere): ")
                     for line in out.splitlines() if line.startswith("password of "))
    users = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("  user ")}
    assert set(passwords) == set(users) == {"monitoring-2", "prometheus-2"}
    for user, password in passwords.items():
        assert bcrypt.checkpw(password.encode(), users[user][3].encode()) and password not in out.split("userlist")[1]
    assert users["monitoring-2"][4:] == ["groups", "pushers"] and users["prometheus-2"][4:] == []
    assert main(["auth", "pushgateway-users", "prometheus"]) == 2  # the default pusher, monitoring, has no password
    assert "pushers without a password" in capsys.readouterr().err


def test_analysts_users_prints_passwords_the_ui_s_userlist_admits(capsys: pytest.CaptureFixture[str]) -> None:
    """The userlist `analysts` of the chart's Evidently UI: every printed password checks against its hash."""
    import bcrypt

    assert main(["auth", "analysts-users", "ana", "ben"]) == 0
    out = capsys.readouterr().out
    passwords = dict(line.removeprefix("password of ").split(" (not stored anywhere): ")
                     for line in out.splitlines() if line.startswith("password of "))
    listed = out.split("userlist (the Secret key analysts-users):\n")[1]
    assert listed.splitlines()[0] == "userlist analysts"
    users = {line.split()[1]: line.split() for line in listed.splitlines() if line.startswith("  user ")}
    assert set(passwords) == set(users) == {"ana", "ben"}
    assert all(bcrypt.checkpw(pw.encode(), users[u][3].encode()) and pw not in listed for u, pw in passwords.items())


def test_version_prints_what_training_records(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`zm version` is the images' build argument: the commit here, the stamp inside an image."""
    from zmlops.version import code_version

    assert main(["version"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == code_version() and len(printed.split("-")[0]) == 40  # this checkout's commit
    monkeypatch.setenv("ZM_CODE_VERSION", "0123abc-built-by-ci")
    assert main(["version"]) == 0 and capsys.readouterr().out.strip() == "0123abc-built-by-ci"
