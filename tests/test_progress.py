"""Progress lines: bytes done / total, rate, ETA, at intervals only."""

import io

from lib.progress import Progress


def test_progress_lines_say_done_total_rate_and_eta_at_intervals():
    now = [0.0]
    out = io.StringIO()
    percents: list[int] = []
    p = Progress(total=4 << 30, interval=2.0, stream=out, on_percent=percents.append, clock=lambda: now[0])
    for _ in range(8):  # 8 × 256 MiB, 1 s apart: a line every 2 s
        now[0] += 1.0
        p.advance(256 << 20)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1] == "progress: 2.0 GiB / 4.0 GiB (50%) at 256.0 MiB/s, ETA 8s"
    assert percents == [12, 25, 37, 50]


def test_progress_without_a_total_reports_bytes_and_rate():
    now = [0.0]
    out = io.StringIO()
    p = Progress(stream=out, interval=1.0, clock=lambda: now[0])
    now[0] = 2.0
    p.advance(10 << 20)
    assert out.getvalue().strip() == "progress: 10.0 MiB at 5.0 MiB/s"


def test_a_failing_progress_callback_never_fails_the_publish():
    def boom(_: int) -> None:
        raise RuntimeError("api server down")

    p = Progress(total=100, interval=0.0, stream=io.StringIO(), on_percent=boom, clock=lambda: 1.0)
    p.advance(50)  # must not raise
    assert p.done == 50
