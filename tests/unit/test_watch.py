"""`swarm status --watch`'s frames, rendered from status dicts of the shape `status` returns."""

import io

from rich.console import Console

from cluster._private.watch import render


def state(succeeded, failed=0, queued=0, health="healthy"):
    tasks = {"succeeded": succeeded, "failed": failed, "timed_out": 0}
    agent = {"state": "alive", "capabilities": ["text.stats"], "inflight": 1}
    return {
        "namespace": "sys",
        "swarms": [
            {
                "swarm": "ai",
                "capabilities": ["text.stats"],
                "queued": queued,
                "queue_depth": {"text.stats": queued},
                "running": 1,
                "tasks": tasks,
                "health": {"health": health},
                "agents": [agent, {**agent, "state": "pending", "inflight": 0}],
                "supervision": {"restarts_in_window": 1, "max_restarts": 3},
            }
        ],
        "missing": [{"swarm": "gone", "reason": "queen:gone is not running"}],
        "ai": {"url": "http://127.0.0.1:8000/v1", "models": {"smollm2": "package:x"}},
        "facts": None,
    }


def text(renderable):
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_a_frame_shows_rates_over_the_time_since_the_last_frame():
    frame = text(render(state(50, failed=2, queued=7), previous=state(30, failed=1), seconds=4.0))
    row = next(line for line in frame.splitlines() if line.strip().startswith("│ ai"))
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[:8] == ["ai", "healthy", "7", "1", "50", "2", "5.0", "0.2"]  # 20 in 4 s; 1 in 4 s
    assert "1 alive 1 pending" in cells[8] and cells[9] == "1/3"
    queues = next(line for line in frame.splitlines() if "text.stats" in line)
    assert [c.strip() for c in queues.strip("│ ").split("│")] == ["ai", "text.stats", "7", "1", "1"]
    assert "gone: queen:gone is not running" in frame and "AI service http://127.0.0.1:8000/v1" in frame


def test_the_first_frame_has_no_rates_yet():
    frame = text(render(state(50)))
    row = next(line for line in frame.splitlines() if line.strip().startswith("│ ai"))
    assert [c.strip() for c in row.strip("│ ").split("│")][6:8] == ["-", "-"]


def test_progress_bars_stay_off_a_stream_that_is_not_a_terminal(capsys):
    from cluster._private.format import progress_bars

    with progress_bars() as progress:
        progress("agents started", 1, 2)
    assert capsys.readouterr().err == ""  # a log or a pipe gets the outcome only
