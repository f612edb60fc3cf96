"""The command-line boundary: :func:`forensics.cli.run` (every expected error -> one log line and
exit code 2), and one visible spelling per option with the other spellings as hidden aliases."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forensics.cli import ERROR_EXIT, build_parser, run
from forensics.cli.options import add_bsize_arg, add_crop_arg, add_option
from forensics.detectors import list_detectors
from forensics.errors import CheckpointError, DatasetLayoutError, ForensicsError, WeightsNotFoundError
from helpers import exit_code

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "analyses").glob("*.py"))


def _load(script: Path):
    spec = importlib.util.spec_from_file_location(f"_cli_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raiser(exc: BaseException):
    def main(argv):
        raise exc
    return main


# ------------------------------------------------------------------------------------------ run(main)

@pytest.mark.parametrize("exc", [ForensicsError("plain"), WeightsNotFoundError("no file"),
                                 CheckpointError("bad file"), DatasetLayoutError("no images")])
def test_run_turns_every_forensics_error_into_one_log_line_and_exit_2(exc, caplog):
    with caplog.at_level(logging.ERROR):
        assert exit_code(_raiser(exc), []) == ERROR_EXIT
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [str(exc)] and errors[0].exc_info is None  # one line, no traceback


def test_run_passes_the_exit_code_through():
    assert exit_code(lambda argv: 0, []) == 0
    assert exit_code(lambda argv: None, []) == 0
    assert exit_code(lambda argv: 3, []) == 3
    seen = []
    exit_code(lambda argv: seen.append(argv), ["--x", "1"])
    assert seen == [["--x", "1"]]


def test_run_expected_types_are_user_errors_and_the_rest_propagates(caplog):
    with caplog.at_level(logging.ERROR):
        assert exit_code(_raiser(ValueError("bad split")), [], expected=(ValueError,)) == ERROR_EXIT
    assert [r.getMessage() for r in caplog.records] == ["bad split"]
    with pytest.raises(ValueError, match="a bug"):  # not named: a bug, with its traceback
        run(_raiser(ValueError("a bug")), [])
    with pytest.raises(RuntimeError):
        run(_raiser(RuntimeError("a bug")), [], expected=(ValueError,))


def test_run_leaves_argparse_exits_alone(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int)
    assert exit_code(parser.parse_args, ["--help"]) == 0
    assert exit_code(parser.parse_args, ["--n", "x"]) == 2 and "invalid int value" in capsys.readouterr().err


def test_module_entry_point_goes_through_run(tmp_path):
    """``python -m forensics``: a sub-command's error is one log line on stderr and exit 2."""
    env = {**os.environ, "FORENSICS_WEIGHTS": str(tmp_path / "nowhere")}
    res = subprocess.run([sys.executable, "-m", "forensics", "predict", "--detector", "resnet50", str(tmp_path),
                          "--out", str(tmp_path / "p.csv")], capture_output=True, text=True, env=env)
    # the first line states the provenance (versions, CPU, lock); then the error, in one line
    lines = [line for line in res.stderr.strip().splitlines() if " INFO forensics.provenance: " not in line]
    assert res.returncode == ERROR_EXIT and len(lines) == 1 and " ERROR forensics: " in lines[0], res.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_script_exits_through_run(script):
    """Each script's ``if __name__ == "__main__":`` block is ``run(main, ...)`` and nothing else."""
    tree = ast.parse(script.read_text())
    guard = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert len(guard) == 1 and len(guard[0].body) == 1
    call = guard[0].body[0].value
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == "run" and ast.unparse(call.args[0]) == "main"


# ------------------------------------------------------------------------------- options and aliases

def test_add_option_aliases_are_hidden_and_set_no_default():
    parser = argparse.ArgumentParser()
    add_option(parser, "--max_rows", "--max-rows", type=int, default=50, help="rows")
    add_option(parser, "--color_robust", "--color-robust", action="store_true", help="flag")
    assert vars(parser.parse_args([])) == {"max_rows": 50, "color_robust": False}
    assert vars(parser.parse_args(["--max-rows", "3", "--color-robust"])) == {"max_rows": 3, "color_robust": True}
    assert parser.parse_args(["--max_rows", "4"]).max_rows == 4
    text = parser.format_help()
    assert "--max_rows" in text and "--max-rows" not in text and "--color-robust" not in text


def test_add_bsize_arg_spellings():
    parser = argparse.ArgumentParser()
    add_bsize_arg(parser, 16)
    for spelling in ("--bsize", "--batch_size", "--batch-size"):
        assert parser.parse_args([spelling, "5"]).bsize == 5
    assert parser.parse_args([]).bsize == 16
    assert "--batch" not in parser.format_help()


def test_add_crop_arg_choices_default_first():
    def choices(**kwargs):
        parser = argparse.ArgumentParser()
        action = add_crop_arg(parser, **kwargs)
        return list(action.choices), parser.parse_args([]).crop, "crop_size" in vars(parser.parse_args([]))
    assert choices() == (["center", "none"], None, False)
    assert choices(default="none") == (["none", "center"], "none", False)
    assert choices(extra=("center", "none", "ten"), size_help="s") == (["center", "none", "ten"], None, True)
    assert choices(default="random_resized", extra=("random_resized", "center", "none"), help="h") == (
        ["random_resized", "center", "none"], "random_resized", False)


def _script_parsers():
    for script in SCRIPTS:
        module = _load(script)
        if hasattr(module, "build_parser"):
            yield script.stem, module.build_parser()


@pytest.fixture(scope="module")
def script_parsers():
    return dict(_script_parsers())


def test_scripts_show_one_spelling_per_option(script_parsers):
    """--help lists each option once: no second spelling of the same option."""
    assert len(script_parsers) >= 12
    for name, parser in script_parsers.items():
        text = parser.format_help()
        for hidden in ("--batch_size", "--batch-size", "--arch {", "--max_per_class", "--train-per-class"):
            assert hidden not in text, (name, hidden)
        for action in parser._actions:
            if action.help != argparse.SUPPRESS:
                long = [s for s in action.option_strings if s.startswith("--")]
                assert len(long) <= 1, (name, action.option_strings)


def test_scripts_accept_the_old_spellings(script_parsers):
    data = {"bsize": ["--batch_size", "7"]}
    for name, parser in script_parsers.items():
        dests = {a.dest for a in parser._actions}
        if "bsize" in dests:
            assert parser.parse_args(data["bsize"] + _required(name)).bsize == 7, name
        if "detector" in dests:
            detector = list_detectors()[0]
            assert parser.parse_args(["--arch", detector] + _required(name)).detector == detector, name
    bench = script_parsers["make_benchmark"]
    args = bench.parse_args(["--out", "x", "--train-family", "nearest", "--gen-steps", "3", "--calibrate-saturation"])
    assert (args.train_family, args.gen_steps, args.calibrate_saturation) == ("nearest", 3, True)
    for spelling in ("--color_families", "--colour_families", "--colour-families"):
        assert bench.parse_args(["--out", "x", spelling, "nearest"]).color_families == "nearest"
    assert script_parsers["attribution"].parse_args(["--max_per_class", "9"]).max_per_class == 9


def _required(name: str) -> list[str]:
    return ["--out", "x"] if name == "make_benchmark" else []


def test_predict_and_train_spellings():
    predict = build_parser()
    args = predict.parse_args(["predict", "--detector", "resnet50", "img", "--batch-size", "3", "--max-rows", "2"])
    assert (args.batch_size, args.max_rows) == (3, 2)
    assert predict.parse_args(["predict", "--detector", "resnet50", "img", "--bsize", "4"]).batch_size == 4
    from forensics.cli.train_args import trainer_parser
    from forensics.train import get_trainer
    for name in ("resnet50", "rine"):
        parser = trainer_parser(get_trainer(name).options)
        base = ["--dataroot", "d"]
        assert parser.parse_args(base + ["--batch_size", "8"]).batch_size == 8
        assert parser.parse_args(base + ["--bsize", "9", "--color-robust"]).color_robust is True
        assert "--batch_size" not in parser.format_help() and "--color-robust" not in parser.format_help()


def test_an_incomplete_explicit_run_names_what_was_given_and_what_is_missing():
    from forensics.cli.inputs import require_explicit
    args = argparse.Namespace(weights=None, dataset_dir="data", gan_name=[], detector=None)
    with pytest.raises(SystemExit) as exc:
        require_explicit(args, "dataset_dir", "gan_name")
    message = str(exc.value)
    assert "--dataset_dir given" in message and "needs --gan_name" in message and "--weights" not in message.split(":")[1]
    require_explicit(argparse.Namespace(weights="w.pth", dataset_dir="d", gan_name=["g"]), "dataset_dir", "gan_name")
