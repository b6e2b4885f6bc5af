"""One error path for every job: bad input is one line (exit 2) even when gin wrapped it in "In call to
configurable ..."; an unexpected failure keeps its own type and traceback, with gin's context as a note."""

import gin
import pytest

from polyret.jobs import common


@gin.configurable
def _h15_configured(batch_size: int = 0, fail_with: str = "config"):
    if fail_with == "config":
        raise common.UsageError(f"BATCH_SIZE={batch_size}: must be at least 1")
    raise KeyError("a bug, not bad input")


def test_gin_wrapped_bad_input_is_one_line_with_the_real_message(capsys):
    def body():
        _h15_configured()  # gin re-raises this through its proxy, the message extended by its context

    try:
        body()
    except ValueError as e:
        assert "In call to configurable" in str(e)  # what gin does: the reason for unwrapping
    assert common.run_main("train", body) == 2
    err = capsys.readouterr().err
    assert err == "polyret train: BATCH_SIZE=0: must be at least 1\n"


def test_unexpected_failure_keeps_its_type_and_traceback():
    with pytest.raises(KeyError) as info:
        common.run_main("train", lambda: _h15_configured(fail_with="bug"))
    assert type(info.value) is KeyError  # not gin's proxy class
    assert any("In call to configurable '_h15_configured'" in n for n in getattr(info.value, "__notes__", []))
    assert info.traceback[-1].name == "_h15_configured"  # the traceback reaches where it was raised


def test_debug_shows_the_traceback_of_expected_errors(monkeypatch):
    monkeypatch.setenv("POLYRET_DEBUG", "1")
    with pytest.raises(common.UsageError, match="BATCH_SIZE=0"):
        common.run_main("train", lambda: _h15_configured())
