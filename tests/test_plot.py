"""``rstream plot``: series extraction and the PNG it draws (end to end in test_cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rstream.cli.plot import collect_series, render_png

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)

# matplotlib's first colour in the default cycle ("C0", #1f77b4): the first line.
C0 = (0x1F / 255, 0x77 / 255, 0xB4 / 255)
C1 = (0xFF / 255, 0x7F / 255, 0x0E / 255)


def line_pixels(png: Path, colour: tuple[float, float, float]) -> int:
    """How many pixels of ``png`` have (nearly) ``colour``."""
    image = pytest.importorskip("matplotlib.image").imread(png)
    np = pytest.importorskip("numpy")
    rgb = image[..., :3]
    distance = np.abs(rgb - np.array(colour)).max(axis=-1)
    return int((distance < 0.08).sum())


def _states(n: int) -> list[tuple[datetime, dict[str, Any]]]:
    return [
        (
            T0 + timedelta(seconds=i),
            {"battery": 1.0 - i / n, "s": {"t": [20 + (i % 5), None]}, "name": "x"},
        )
        for i in range(n)
    ]


def test_collect_series_marks_gaps_as_nan() -> None:
    battery, temp, name, missing = collect_series(
        ["battery", "s.t.0", "name", "s.t.1"], _states(10)
    )
    assert battery.values[0] == 1.0
    assert battery.numeric_points == 10
    assert temp.values[:3] == [20.0, 21.0, 22.0]
    assert name.numeric_points == 0
    assert missing.numeric_points == 0
    assert len(battery.times) == 10


def test_render_png_draws_the_lines(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")
    series = collect_series(["battery", "s.t.0"], _states(50))
    out = tmp_path / "plot.png"
    render_png(series, out, title="robot", end=T0 + timedelta(seconds=60), width=6, height=3)
    assert out.stat().st_size > 5_000
    image = pytest.importorskip("matplotlib.image").imread(out)
    assert image.shape[:2] == (300, 600)
    assert line_pixels(out, C0) > 300  # the battery line
    assert line_pixels(out, C1) > 300  # the temperature line


def test_render_png_of_nothing_numeric_draws_no_line(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")
    series = collect_series(["name"], _states(20))
    out = tmp_path / "blank.png"
    render_png(series, out, title="robot", width=6, height=3)
    assert line_pixels(out, C0) == 0  # the check above is not fooled by axes or text
