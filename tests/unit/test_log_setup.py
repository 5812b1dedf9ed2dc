"""The foreground log at the default level carries the platform's lines, not the libraries' chatter."""
from __future__ import annotations

import logging
import warnings

import pytest
from typer.testing import CliRunner

from services.apps.cli.main import app
from services.lib.common.log_setup import CHATTY_LIBRARIES, RepeatFilter, configure_logging, parse_level


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    with warnings.catch_warnings():
        yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def test_at_info_the_platform_speaks_and_the_libraries_only_warn(restored_logging):
    configure_logging("info")
    assert logging.getLogger("services.deployer.reconciler").isEnabledFor(logging.INFO)
    for name in ("httpx", "onnxruntime.quantization.matmul_nbits_quantizer", "aiokafka.consumer.group_coordinator"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO), name
        assert logger.isEnabledFor(logging.WARNING), name
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")   # what configure_logging adds below goes first
        configure_logging("info")
        warnings.warn("Converting a tensor to a Python boolean might cause the trace to be incorrect.")
        warnings.warn("a warning of ours")
    assert [str(w.message) for w in seen] == ["a warning of ours"]


def test_debug_shows_everything_and_warning_hides_our_info(restored_logging):
    configure_logging("DEBUG")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    configure_logging("warning")
    assert not logging.getLogger("services.deployer").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)


def test_an_unknown_level_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'loud' is not one of debug, info, warning, error"):
        parse_level("loud")
    result = CliRunner().invoke(app, ["up", "--log-level", "loud"])
    assert result.exit_code == 2
    assert "is not one of debug, info, warning, error" in result.output


def test_a_repeated_warning_is_said_once_a_minute_with_how_often_it_repeated():
    clock = [0.0]
    repeats = RepeatFilter(window=60, clock=lambda: clock[0])

    def record(msg: str, level=logging.ERROR, name="aiokafka.conn") -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1:9092",), None)

    kept = []
    for second in range(130):   # a reconnect loop: ten failures a second for 130 s
        clock[0] = float(second)
        for _ in range(10):
            r = record("Unable connect to node %s")
            if repeats.filter(r):
                kept.append(r.getMessage())
    assert kept == ["Unable connect to node 127.0.0.1:9092",
                    "Unable connect to node 127.0.0.1:9092 [599 more like this in the last 60 s]",
                    "Unable connect to node 127.0.0.1:9092 [599 more like this in the last 60 s]"]
    # Other messages, other loggers and anything below a warning are not held back.
    assert repeats.filter(record("Another failure %s"))
    assert repeats.filter(record("Unable connect to node %s", name="services.lib.common.outbox"))
    assert all(repeats.filter(record("connected to %s", level=logging.INFO)) for _ in range(3))
