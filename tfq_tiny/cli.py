"""Command-line plumbing of tfq_tiny's absl-flag scripts (``examples/``, ``python -m
tfq_tiny.export``): flags checked when they are parsed, and a clean exit on bad input.

absl prints a traceback for whatever ``main`` raises. For a ``TfqError`` (bad input, whose
message says what is wrong and what to do) the message is the useful part, and a flag such as
``--models=resnet`` should fail before any work starts, not after minutes of it.
"""
import sys

from absl import app, flags

from tfq_tiny.errors import TfqError


def clean_errors(main):
    """``main`` with a ``TfqError`` printed as ``error: <message>`` and exit status 2 instead
    of a traceback."""
    def guarded(args):
        try:
            return main(args)
        except TfqError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return guarded


def run(main, argv=None):
    """``absl.app.run`` of ``clean_errors(main)``."""
    app.run(clean_errors(main), argv)


def _items(value):
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def check_choices(name, choices, flag_values=flags.FLAGS):
    """Reject, at parse time, a value of flag ``name`` (a string or a list) not in ``choices``."""
    choices = tuple(choices)

    def checker(value):
        bad = [v for v in _items(value) if v not in choices]
        if bad:
            raise flags.ValidationError(f"unknown {', '.join(map(repr, bad))}; choose from "
                                        f"{', '.join(choices)}.")
        return True

    flags.register_validator(name, checker, flag_values=flag_values)


def check_ints(name, minimum=0, flag_values=flags.FLAGS):
    """Reject, at parse time, items of list flag ``name`` that are not integers >= ``minimum``."""
    def checker(value):
        for item in _items(value):
            try:
                number = int(item)
            except (TypeError, ValueError):
                raise flags.ValidationError(f"{item!r} is not an integer.") from None
            if number < minimum:
                raise flags.ValidationError(f"{number} is below {minimum}.")
        return True

    flags.register_validator(name, checker, flag_values=flag_values)


def check_policies(name, extra=(), flag_values=flags.FLAGS):
    """Reject, at parse time, values of flag ``name`` (a string or a list) that are not bit
    policies ``BitPolicy.parse`` reads (shorthands such as w4a4 or w4a32, or JSON), besides
    the script's own names in ``extra``."""
    def checker(value):
        from tfq_tiny.quantization.policy import BitPolicy

        for item in _items(value):
            if item in extra:
                continue
            try:
                BitPolicy.parse(item)
            except ValueError as error:
                raise flags.ValidationError(str(error)) from None
        return True

    flags.register_validator(name, checker, flag_values=flag_values)


def check_bits(name, off=(), meaning="off", flag_values=flags.FLAGS):
    """Reject, at parse time, a bit-width flag (integer, or digits in a string flag) outside
    2..8 unless it is one of the ``off`` values (e.g. 0, or "none" for float activations), whose
    ``meaning`` the error message names."""
    from tfq_tiny.quantization.grid import MAX_BITS, MIN_BITS

    def checker(value):
        if value in off or (isinstance(value, str) and value.lower() in off):
            return True
        if isinstance(value, str):
            if not value.isdigit():
                return False
            value = int(value)
        return MIN_BITS <= value <= MAX_BITS

    also = f", or {' / '.join(repr(v) for v in off)} ({meaning})" if off else ""
    flags.register_validator(name, checker, flag_values=flag_values,
                             message=f"must be a bit width from {MIN_BITS} to {MAX_BITS}{also}.")
