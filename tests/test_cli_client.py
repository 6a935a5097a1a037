"""`imeireg check`, `tac` and `info`: their output and exit codes, against a real server."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    BARRED_TAC,
    OTHER_TAC,
    UNALLOCATED_TAC,
    SmallRegistry,
    free_port,
    imeireg_command,
)

from imeireg.cli import main
from imeireg.cli_support import ExitCode
from imeireg.client.cli import add_commands

R = SmallRegistry


class ImeiregRun:
    """Runs `imeireg ARGS...` in this process and keeps its exit code and output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main(args)
        out, err = self._capsys.readouterr()
        return code, out, err


@pytest.fixture
def imeireg(
    target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ImeiregRun]:
    """`imeireg` in this process, with the small registry's server as its default target."""
    monkeypatch.setenv("IMEIREG_TARGET", target)
    yield ImeiregRun(capsys)


def lines(text: str) -> list[list[str]]:
    """Plain table output, split into columns."""
    return [line.split() for line in text.splitlines()]


def test_exit_codes_are_stable() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "NOT_WHITELISTED": 1,
        "USAGE": 2,
        "UNAVAILABLE": 3,
        "BAD_INPUT": 4,
        "REFUSED": 5,
        "STORE": 6,
    }


def test_every_option_of_every_client_command_has_help() -> None:
    parser = argparse.ArgumentParser(prog="imeireg")
    subparsers = parser.add_subparsers()
    add_commands(subparsers)
    for name in ("check", "tac", "info"):
        command = subparsers.choices[name]
        assert command.get_default("func") is not None
        for action in command._actions:
            assert action.help, f"imeireg {name} {action.dest} has no help"


def test_check_of_whitelisted_imeis_exits_0_with_a_table(imeireg: ImeiregRun) -> None:
    code, out, err = imeireg("check", R.registered, R.registered_other_tac)
    assert (code, err) == (ExitCode.OK, "")
    assert lines(out) == [
        ["IMEI", "STATUS", "REASONS"],
        [R.registered, "WHITELISTED", "REGISTERED"],
        [R.registered_other_tac, "WHITELISTED", "REGISTERED"],
    ]


def test_check_exits_1_when_one_imei_is_not_whitelisted(imeireg: ImeiregRun) -> None:
    code, out, _ = imeireg("check", R.registered, R.provisional, R.stolen)
    assert code == ExitCode.NOT_WHITELISTED
    assert lines(out)[1:] == [
        [R.registered, "WHITELISTED", "REGISTERED"],
        [R.provisional, "GREYLISTED", "REGISTRATION_PROVISIONAL"],
        [R.stolen, "BLACKLISTED", "REGISTERED", "STOLEN"],
    ]


def test_check_passes_imsis_aligned_with_imeis(imeireg: ImeiregRun) -> None:
    code, out, _ = imeireg("check", R.paired, R.registered, "--imsi", R.paired_imsi, "")
    assert code == ExitCode.OK
    assert lines(out)[1] == [R.paired, "WHITELISTED", "NOT_REGISTERED", "PAIRED"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", R.paired, R.registered, "--imsi", R.paired_imsi], "2 IMEIs, 1 IMSIs"),
        (["check"], "check needs IMEIs, or --file"),
        (["check", R.registered, "--file", "imeis.csv"], "IMEIs or --file, not both"),
        (["check", "--file", "imeis.csv", "--imsi", R.paired_imsi], "--file has its own IMSIs"),
    ],
)
def test_check_usage_errors_exit_2_with_one_line(
    imeireg: ImeiregRun, args: list[str], message: str
) -> None:
    code, out, err = imeireg(*args)
    assert (code, out) == (ExitCode.USAGE, "")
    assert err.startswith("imeireg: ")
    assert message in err
    assert err.count("\n") == 1


def test_check_with_a_rejected_imsi_exits_4(imeireg: ImeiregRun) -> None:
    code, _, err = imeireg("check", R.registered, "--imsi", "not digits")
    assert code == ExitCode.BAD_INPUT
    assert "INVALID_ARGUMENT" in err
    assert "imsis[0]" in err


def test_check_of_an_unreachable_service_exits_3(imeireg: ImeiregRun) -> None:
    target = f"127.0.0.1:{free_port()}"
    # Its retries fail fast (connection refused): the deadline only has to outlast them on
    # a loaded machine, where an expired one would say DEADLINE_EXCEEDED instead.
    code, out, err = imeireg("check", R.registered, "--target", target, "--timeout", "60")
    assert (code, out) == (ExitCode.UNAVAILABLE, "")
    assert err.startswith(f"imeireg: {target}: UNAVAILABLE: ")
    assert err.count("\n") == 1


@pytest.fixture
def imei_file(tmp_path: Path) -> Path:
    """An IMEI file with a header, a blank line, stray spaces and one IMSI column."""
    path = tmp_path / "imeis.csv"
    path.write_text(
        f"imei,imsi\n{R.registered}\n\n {R.paired} , {R.paired_imsi}\n{R.stolen},\nhello\n",
        encoding="utf-8",
    )
    return path


FILE_VERDICTS = [
    [R.registered, R.registered[:14], "WHITELISTED", "REGISTERED"],
    [R.paired, R.paired[:14], "WHITELISTED", "NOT_REGISTERED|PAIRED"],
    [R.stolen, R.stolen[:14], "BLACKLISTED", "REGISTERED|STOLEN"],
    ["hello", "", "BLACKLISTED", "INVALID_FORMAT"],
]


def test_check_file_prints_a_table_in_file_order(imeireg: ImeiregRun, imei_file: Path) -> None:
    code, out, _ = imeireg("check", "--file", str(imei_file))
    assert code == ExitCode.NOT_WHITELISTED
    assert lines(out) == [
        ["IMEI", "STATUS", "REASONS"],
        *([imei, status, *reasons.split("|")] for imei, _, status, reasons in FILE_VERDICTS),
    ]


def test_check_file_writes_csv_and_a_summary(
    imeireg: ImeiregRun, imei_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "verdicts.csv"
    code, out, _ = imeireg("check", "--file", str(imei_file), "--output", str(output))
    assert code == ExitCode.NOT_WHITELISTED
    with output.open(newline="", encoding="utf-8") as written:
        assert list(csv.reader(written)) == [
            ["imei", "imei_body", "status", "reasons"],
            *FILE_VERDICTS,
        ]
    assert out == f"4 verdicts written to {output}: 2 BLACKLISTED, 2 WHITELISTED\n"


def test_check_file_from_stdin_to_csv_on_stdout(
    imeireg: ImeiregRun, imei_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(imei_file.read_text(encoding="utf-8")))
    code, out, _ = imeireg("check", "--file", "-", "--output", "-")
    assert code == ExitCode.NOT_WHITELISTED
    assert list(csv.reader(io.StringIO(out))) == [
        ["imei", "imei_body", "status", "reasons"],
        *FILE_VERDICTS,
    ]


def test_check_json_writes_one_object_per_line(imeireg: ImeiregRun, imei_file: Path) -> None:
    code, out, _ = imeireg("check", "--file", str(imei_file), "--json")
    assert code == ExitCode.NOT_WHITELISTED
    records = [json.loads(line) for line in out.splitlines()]
    assert records[3] == {
        "imei": "hello",
        "imei_body": None,
        "status": "BLACKLISTED",
        "reasons": ["INVALID_FORMAT"],
        "generation": 7,
    }
    assert [r["imei_body"] for r in records[:3]] == [row[1] for row in FILE_VERDICTS[:3]]


def test_check_of_a_missing_file_exits_4(imeireg: ImeiregRun, tmp_path: Path) -> None:
    code, out, err = imeireg("check", "--file", str(tmp_path / "absent.csv"))
    assert (code, out) == (ExitCode.BAD_INPUT, "")
    assert err.startswith("imeireg: ") and "absent.csv" in err


def test_check_file_with_too_many_columns_names_the_line(
    imeireg: ImeiregRun, tmp_path: Path
) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(f"{R.registered}\n{R.stolen},{R.paired_imsi},extra\n", encoding="utf-8")
    code, _, err = imeireg("check", "--file", str(path))
    assert code == ExitCode.BAD_INPUT
    assert err == f"imeireg: {path}:2: expected imei[,imsi], got 3 columns\n"


def test_check_of_an_empty_file_exits_4(imeireg: ImeiregRun, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("imei\n\n", encoding="utf-8")
    code, out, err = imeireg("check", "--file", str(path))
    assert (code, out, err) == (ExitCode.BAD_INPUT, "", f"imeireg: no IMEI in {path}\n")


def test_tac_prints_model_data(imeireg: ImeiregRun) -> None:
    code, out, _ = imeireg("tac", OTHER_TAC, BARRED_TAC, UNALLOCATED_TAC)
    assert code == ExitCode.OK
    header, other, barred, unallocated = out.splitlines()
    assert header.split() == [
        "TAC", "ALLOCATED", "BARRED", "MANUFACTURER", "MODEL", "BRAND", "TYPE", "SINCE", "BANDS"
    ]  # fmt: skip
    assert other.split() == [
        OTHER_TAC, "yes", "no", "Zero", "Mobile", "Z0", "Zero", "Feature", "phone", "2020-01-01",
        "LTE",
    ]  # fmt: skip
    assert barred.split()[:3] == [BARRED_TAC, "yes", "yes"]
    assert unallocated.split() == [UNALLOCATED_TAC, "no", "no"]


def test_info_prints_snapshot_rows_and_imports(imeireg: ImeiregRun) -> None:
    code, out, _ = imeireg("info")
    assert code == ExitCode.OK
    text = lines(out)
    assert text[0][:3] == ["snapshot:", "generation", "7,"]
    assert ["allocated", "TACs:", "3"] in text
    assert ["registration", "8"] in text
    assert ["barred-tac", "1"] in text
    header = ["GENERATION", "COMMITTED", "(UTC)", "LIST", "MODE", "ROWS", "FILE"]
    imports = text[text.index(header) + 1 :]
    assert [row[0] for row in imports] == ["7", "6", "5", "4", "3", "2", "1"]
    assert imports[0][3:] == ["pairing", "full", "1", "pairing.csv"]


def test_imeireg_process_reads_its_target_from_the_environment(target: str) -> None:
    finished = subprocess.run(
        imeireg_command("check", R.registered, R.barred),
        capture_output=True,
        text=True,
        env={**os.environ, "IMEIREG_TARGET": target},
        check=False,
    )
    assert finished.returncode == ExitCode.NOT_WHITELISTED
    assert lines(finished.stdout)[2] == [R.barred, "BLACKLISTED", "REGISTERED", "BARRED"]
