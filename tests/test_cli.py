"""Script plumbing: bad flags fail at parse time with a message, TfqError exits cleanly."""
import os
import subprocess
import sys

import pytest
from absl import flags

from tfq_tiny import cli
from tfq_tiny.errors import BitWidthError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parsed(*argv):
    values = flags.FlagValues()
    flags.DEFINE_list("models", ["cnn1d"], "", flag_values=values)
    flags.DEFINE_list("seeds", ["0"], "", flag_values=values)
    flags.DEFINE_list("bits", ["w4a4"], "", flag_values=values)
    flags.DEFINE_integer("edge_bits", 0, "", flag_values=values)
    cli.check_choices("models", ("cnn1d", "res8"), flag_values=values)
    cli.check_ints("seeds", flag_values=values)
    cli.check_policies("bits", extra=("mixed",), flag_values=values)
    flags.DEFINE_string("activation_bits", "4", "", flag_values=values)
    cli.check_bits("edge_bits", off=(0,), flag_values=values)
    cli.check_bits("activation_bits", off=("none",), meaning="float activations", flag_values=values)
    values(["prog", *argv])
    return values


def test_good_flags_parse():
    values = parsed("--models=res8,cnn1d", "--seeds=0,3", "--bits=w8a8,w4a32,mixed",
                    "--edge_bits=8", "--activation_bits=None")
    assert values.models == ["res8", "cnn1d"] and values.edge_bits == 8
    assert parsed("--edge_bits=0", "--activation_bits=3").activation_bits == "3"


@pytest.mark.parametrize("argv, says", [
    (["--models=res8,resnet"], "unknown 'resnet'; choose from cnn1d, res8"),
    (["--seeds=0,a"], "'a' is not an integer"),
    (["--seeds=-1"], "-1 is below 0"),
    (["--bits=w9a4"], "weight_bits must be one of"),
    (["--bits=4bit"], "Cannot read a bit policy from '4bit'"),
    (["--edge_bits=1"], "must be a bit width from 2 to 8, or 0 (off)"),
    (["--activation_bits=9"], "must be a bit width from 2 to 8, or 'none' (float activations)"),
    (["--activation_bits=four"], "must be a bit width from 2 to 8, or 'none' (float activations)"),
])
def test_bad_flags_fail_at_parse_time_saying_what_is_wrong(argv, says):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        parsed(*argv)
    assert says in str(error.value)


def test_a_tfq_error_is_printed_and_exits_2(capsys):
    def main(argv):
        raise BitWidthError("weight_bits must be one of [2..8], got 9. Pick one.")

    with pytest.raises(SystemExit) as stop:
        cli.clean_errors(main)(["prog"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "error: weight_bits must be one of [2..8], got 9. Pick one."


def test_a_script_rejects_an_unknown_model_before_any_work(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "benchmark.py"), "--models=resnet",
         f"--output={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode != 0
    assert "Flags parsing error: flag --models=['resnet']: unknown 'resnet'; choose from" in \
        result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
