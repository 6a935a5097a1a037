"""The packaging promises: the server never imports the client, and the plain install (the
client, without the `server` extra) runs check, tac and info and names the extra for the rest.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from support import SmallRegistry

from imeireg.cli import SERVER_COMMANDS, SERVER_EXTRA
from imeireg.cli_support import ExitCode
from imeireg.server import cli as server_cli

ROOT = Path(__file__).resolve().parents[1]
R = SmallRegistry

# What the `server` extra installs, by the module each distribution is imported as.
SERVER_EXTRA_MODULES = {
    "grpcio-health-checking": "grpc_health",
    "grpcio-reflection": "grpc_reflection",
    "pyroaring": "pyroaring",
    "lmdb": "lmdb",
    "numpy": "numpy",
    "numba": "numba",
    "pyarrow": "pyarrow",
    "rich": "rich",
}

# `imeireg` in a Python where the server extra's modules are not there, as after
# `pip install imeireg`: importing any of them fails as it would in that install.
WITHOUT_SERVER_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

ABSENT = set(sys.argv[1].split(","))


class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Absent())
from imeireg.cli import main

sys.exit(main(sys.argv[2:]))
"""


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of `path` names, `from a import b` as a and a.b."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def client_only_imeireg(*args: str) -> subprocess.CompletedProcess[str]:
    absent = ",".join(SERVER_EXTRA_MODULES.values())
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SERVER_EXTRA, absent, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_server_never_imports_the_client() -> None:
    # imeireg.cli is where the client's commands and the server's meet: importing it
    # would bring in the client all the same.
    forbidden = ("imeireg.client", "imeireg.cli")
    modules = sorted((ROOT / "server").rglob("*.py"))
    assert ROOT / "server" / "cli.py" in modules
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    }
    assert not offenders


def distributions(requirements: list[str]) -> set[str]:
    """The distribution each requirement names, without its extras or versions."""
    return {re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0] for requirement in requirements}


def test_the_modules_held_absent_are_those_the_server_extra_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    server_extra = distributions(project["optional-dependencies"]["server"])
    assert server_extra == set(SERVER_EXTRA_MODULES)
    assert not server_extra & distributions(project["dependencies"])


def test_the_commands_listed_without_the_server_are_the_servers_own() -> None:
    parser = argparse.ArgumentParser(prog="imeireg")
    commands = parser.add_subparsers()
    server_cli.add_commands(commands)
    assert tuple(commands.choices) == SERVER_COMMANDS


def test_without_the_server_extra_server_commands_name_it_in_one_line() -> None:
    listed = client_only_imeireg("--help")
    assert (listed.returncode, listed.stderr) == (ExitCode.OK, "")
    for name in (*SERVER_COMMANDS, "check", "tac", "info"):
        assert f"    {name} " in listed.stdout
    for args in (["serve"], ["serve", "--db", "registry", "--port", "0"], ["snapshot", "--help"]):
        refused = client_only_imeireg(*args)
        assert (refused.returncode, refused.stdout) == (ExitCode.USAGE, "")
        assert refused.stderr.startswith(
            f"imeireg: the {args[0]} command needs the server: {SERVER_EXTRA} (no module named "
        )
        assert refused.stderr.count("\n") == 1


def test_without_the_server_extra_check_asks_a_real_server(target: str) -> None:
    checked = client_only_imeireg("check", "--target", target, R.registered, R.barred)
    assert (checked.returncode, checked.stderr) == (ExitCode.NOT_WHITELISTED, "")
    assert [line.split() for line in checked.stdout.splitlines()] == [
        ["IMEI", "STATUS", "REASONS"],
        [R.registered, "WHITELISTED", "REGISTERED"],
        [R.barred, "BLACKLISTED", "REGISTERED", "BARRED"],
    ]
