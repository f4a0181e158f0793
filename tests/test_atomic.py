"""A stop (SIGTERM, Ctrl-C) publishes nothing, even when the Stopped its handler raised was lost."""

import importlib
import signal

import pytest

from ipt_edge import atomic, stopping


@pytest.fixture
def stop_asked(monkeypatch):
    """The state a handler leaves when its Stopped was dropped (raised inside a finalizer)."""
    monkeypatch.setattr(stopping, "stop_signal", signal.SIGTERM)


def test_the_handler_records_the_signal_and_raises(monkeypatch):
    monkeypatch.setattr(stopping, "stop_signal", None)
    with pytest.raises(stopping.Stopped) as stopped:
        stopping.request_stop(signal.SIGTERM)
    assert stopped.value.signum == signal.SIGTERM and stopping.stop_signal == signal.SIGTERM


def test_a_commit_after_a_lost_stop_is_refused_and_the_old_file_stays(stop_asked, tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(stopping.Stopped):
        atomic.write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_commit_without_a_stop_replaces_the_target(monkeypatch, tmp_path):
    monkeypatch.setattr(stopping, "stop_signal", None)
    source, target = tmp_path / "new", tmp_path / "out"
    source.write_text("new")
    target.write_text("old")
    atomic.commit(source, target)
    assert target.read_text() == "new" and not source.exists()


def test_a_command_that_ends_after_a_lost_stop_exits_as_stopped(monkeypatch):
    cli = importlib.import_module("ipt_edge.cli.app")  # the module (ipt_edge.cli.app is also the Typer app)

    def finishes_anyway():
        stopping.stop_signal = signal.SIGTERM  # what the handler left; its Stopped was dropped
        raise SystemExit(0)  # how a typer app ends

    monkeypatch.setattr(stopping, "stop_signal", None)
    monkeypatch.setattr(cli, "app", finishes_anyway)
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    with pytest.raises(SystemExit) as exit:
        cli.main()
    assert exit.value.code == 128 + signal.SIGTERM
