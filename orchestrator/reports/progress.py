"""Pure formatting of the live progress line and the end-of-run summary."""

from __future__ import annotations

from collections.abc import Sequence


def format_duration(seconds: float) -> str:
    """``0.42s``, ``12.3s``, ``2m05s``, ``1h02m``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta_seconds(remaining_estimate: float, workers: int) -> float:
    """Time left if the remaining estimated work spreads evenly over the workers."""
    return max(0.0, remaining_estimate) / max(1, workers)


def progress_line(done: int, total: int, failed: int, elapsed: float, eta: float | None) -> str:
    """``[ 120/450] 27% | 2 failed | 0:12 elapsed | ETA 0:31``."""
    width = len(str(total))
    percent = (100 * done // total) if total else 100
    parts = [f"[{done:>{width}}/{total}] {percent:3d}%", f"{failed} failed"]
    parts.append(f"{format_duration(elapsed)} elapsed")
    if eta is not None and done < total:
        parts.append(f"ETA {format_duration(eta)}")
    return " | ".join(parts)


def summary_lines(
    *,
    where: str,
    workers: int,
    wall: float,
    serial: float,
    slowest: Sequence[tuple[str, float]],
    lost: Sequence[str],
    store: str,
    startup: float | None,
    flaky: Sequence[tuple[str, int]] = (),
    fail_on_flaky: bool = False,
    retried_failing: Sequence[tuple[str, int]] = (),
    gave_up: str | None = None,
    recycled: Sequence[str] = (),
) -> list[str]:
    """The orchestrator's section of the terminal summary."""
    speedup = serial / wall if wall > 0 else 0.0
    lines = [
        f"{workers} worker(s) on {where}",
        f"wall time {format_duration(wall)}, serial time {format_duration(serial)} "
        f"(sum of test durations), speed-up {speedup:.2f}x",
    ]
    if startup is not None:
        lines.append(f"start-up {format_duration(startup)} (collection done to first result)")
    if slowest:
        lines.append("slowest tests:")
        lines.extend(f"  {format_duration(secs):>8}  {nodeid}" for nodeid, secs in slowest)
    if flaky:
        verdict = "they fail the run (--ray-fail-on-flaky)" if fail_on_flaky else "counted passed"
        lines.append(f"flaky tests (passed on a retry; {verdict}):")
        lines.extend(f"  {nodeid} (passed on attempt {n})" for nodeid, n in flaky)
    if retried_failing:
        lines.append("failed on every attempt:")
        lines.extend(f"  {nodeid} ({n} attempts)" for nodeid, n in retried_failing)
    if recycled:
        lines.append(f"workers recycled ({len(recycled)}), each replaced by a fresh one:")
        lines.extend(f"  {entry}" for entry in recycled)
    if lost:
        lines.append("workers lost: " + ", ".join(lost))
    if gave_up:
        lines.append(f"stopped early: {gave_up}")
    lines.append(f"durations recorded in {store}")
    return lines
