"""The run's plot, checked by its structure (axes, lines, bands, texts), not by pixels.

The figure is taken from ``Figure.savefig`` as ``write_plot`` saves it, so the same
checks run against any implementation of ``write_plot``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

import transportkit
from transportkit.scenario import RunResult, load, run_scenario, write_plot
from transportkit.scenario._spans import fault_spans


def _saved_figure(result: RunResult, path: Path, monkeypatch: pytest.MonkeyPatch) -> Figure:
    saved: list[Figure] = []
    original = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    write_plot(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(saved) == 1
    return saved[0]


def _panel(fig: Figure, words: str) -> Axes:
    found = [ax for ax in fig.axes if words in ax.get_title(loc="left")]
    assert len(found) == 1, [ax.get_title(loc="left") for ax in fig.axes]
    return found[0]


def _drawn_texts(fig: Figure) -> list[Text]:
    """The figure's visible, non-empty texts, less the labels of ticks outside their
    axis's view (matplotlib keeps those objects but does not draw them)."""
    hidden: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = (high - low) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - span <= tick.get_loc() <= high + span:
                    hidden.update((id(tick.label1), id(tick.label2)))
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]


def _bands(ax: Axes) -> list[Rectangle]:
    """The shaded fault bands of a time panel (axvspan rectangles spanning the height)."""
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == "fault"]


@pytest.fixture(scope="module")
def figure(small_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Figure:
    with pytest.MonkeyPatch.context() as monkeypatch:
        fig = _saved_figure(small_run, tmp_path_factory.mktemp("plot") / "run.png", monkeypatch)
    FigureCanvasAgg(fig).draw()
    return fig


def test_latency_is_a_percentile_distribution_on_log_axes(
    figure: Figure, small_run: RunResult
) -> None:
    ax = _panel(figure, "latency")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    with_latency = [n for n, s in small_run.metrics.streams.items() if s.latency.get_total_count()]
    assert len(ax.get_lines()) == len(with_latency) == 2
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert labels[:4] == ["0", "90", "99", "99.9"]
    for line in ax.get_lines():
        latencies = list(line.get_ydata())
        assert latencies == sorted(latencies)  # a percentile curve never goes down


def test_every_stream_has_a_deliveries_line(figure: Figure, small_run: RunResult) -> None:
    ax = _panel(figure, "deliveries over time")
    labels = sorted(
        str(line.get_label()).split(" ")[0]
        for line in ax.get_lines()
        if not str(line.get_label()).startswith("_")
    )
    assert labels == sorted(small_run.metrics.streams) == ["desk-risk", "feed"]
    assert ax.get_yscale() == "symlog"


def test_failures_of_every_kind_are_plotted_over_time(figure: Figure) -> None:
    ax = _panel(figure, "failures")
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("desk-risk: typed failures") for label in labels), labels
    assert any(label.startswith("feed: sequence gaps") for label in labels), labels


def test_faults_with_a_duration_are_bands_and_instants_are_lines(
    figure: Figure, spans_with_duration: int
) -> None:
    for words in ("deliveries over time", "failures"):
        ax = _panel(figure, words)
        assert len(_bands(ax)) == spans_with_duration
        lines = [line for line in ax.get_lines() if line.get_gid() == "fault"]
        assert len(lines) == 1  # the dropped connection
    table = [t.get_text() for t in figure.findobj(Text) if t.get_text().startswith(("1.", "5."))]
    assert any("risk-host crashed" in t for t in table), table
    assert any("to the end" in t and "spare crashed" in t for t in table), table


def test_no_text_is_outside_the_figure_and_no_two_texts_overlap(figure: Figure) -> None:
    renderer = FigureCanvasAgg(figure).get_renderer()
    bounds = figure.bbox
    texts = _drawn_texts(figure)
    assert len(texts) > 20
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= bounds.x0 - 1 and box.x1 <= bounds.x1 + 1, text.get_text()
        assert box.y0 >= bounds.y0 - 1 and box.y1 <= bounds.y1 + 1, text.get_text()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for i, (first, a) in enumerate(boxes):
        for second, b in boxes[i + 1 :]:
            assert not a.overlaps(b), (first, second)
    tags = [t for t in texts if t.get_text().strip().isdigit() and t.get_bbox_patch() is not None]
    assert len(tags) == 5
    boxes = [t.get_window_extent(renderer) for t in tags]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


def test_the_title_names_scenario_seed_backend_and_the_verdict_is_shown(
    figure: Figure,
) -> None:
    title = figure.get_suptitle()
    assert "viz-small" in title and "seed 11" in title and "sim backend" in title
    assert title.endswith("PASSED: 2 invariants")


def test_a_run_without_a_trace_is_plotted_from_its_metrics(
    small_run: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a zmq run gives the plot: metrics and faults, no simulation (the real run
    is the slow test below)."""
    result = dataclasses.replace(small_run, simulation=None, backend="zmq")
    fig = _saved_figure(result, tmp_path / "untraced.png", monkeypatch)
    assert "zmq backend" in fig.get_suptitle()
    assert len(_panel(fig, "latency").get_lines()) == 2
    labels = [str(line.get_label()) for line in _panel(fig, "failures").get_lines()]
    assert any(label.startswith("desk-risk: typed failures") for label in labels)
    assert not any("dropped by sockets" in label for label in labels)  # from the sim trace


@pytest.mark.slow
def test_a_zmq_run_is_plotted_from_its_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(
        """
[scenario]
name = "viz-real"
duration = 0.6
drain = 0.3

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://127.0.0.1:*"
rate = 200

[[component]]
name = "risk"
kind = "risk_server"
node = "exchange"
bind = "ipc://viz-risk"

[[component]]
name = "orders"
kind = "risk_client"
node = "trader"
connect = "ipc://viz-risk"
rate = 50
timeout_ms = 500

[[fault]]
at = 0.2
kind = "partition"
a = "exchange"
b = "trader"

[[fault]]
at = 0.4
kind = "repair"
a = "exchange"
b = "trader"
""",
        encoding="utf-8",
    )
    result = run_scenario(load(path), backend="zmq")
    assert result.simulation is None
    fig = _saved_figure(result, tmp_path / "real.png", monkeypatch)
    FigureCanvasAgg(fig).draw()
    assert "zmq backend" in fig.get_suptitle()
    latency = _panel(fig, "latency")
    assert latency.get_xscale() == "log" and len(latency.get_lines()) >= 1
    assert len(_bands(_panel(fig, "deliveries over time"))) == 1


SHIPPED = sorted(
    p
    for p in (Path(transportkit.__file__).parent / "scenarios").glob("*.toml")
    if "million" not in p.stem
)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_scenario_plots_within_the_figure(
    scenario: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_scenario(load(scenario))
    fig = _saved_figure(result, tmp_path / "run.png", monkeypatch)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for text in _drawn_texts(fig):
        box = text.get_window_extent(renderer)
        assert fig.bbox.x0 - 1 <= box.x0 and box.x1 <= fig.bbox.x1 + 1, text.get_text()
        assert fig.bbox.y0 - 1 <= box.y0 and box.y1 <= fig.bbox.y1 + 1, text.get_text()
    spans = [s for s in fault_spans(result.faults, result.elapsed) if s.end is not None]
    assert len(_bands(_panel(fig, "deliveries over time"))) == len(spans)
    with_latency = [s for s in result.metrics.streams.values() if s.latency.get_total_count()]
    assert len(_panel(fig, "latency").get_lines()) == len(with_latency)


@pytest.mark.slow
def test_many_faults_close_together_stay_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import SCENARIO  # noqa: PLC0415

    drop = '\n[[fault]]\nat = {:.2f}\nkind = "drop_connection"\na = "exchange"\nb = "desk"\n'
    extra = "".join(drop.format(0.1 + 0.05 * i) for i in range(14))
    path = tmp_path / "many.toml"
    path.write_text(
        SCENARIO.replace("[[invariant]]", extra + "\n[[invariant]]", 1), encoding="utf-8"
    )
    result = run_scenario(load(path))
    fig = _saved_figure(result, tmp_path / "many.png", monkeypatch)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = _drawn_texts(fig)
    spans = fault_spans(result.faults, result.elapsed)
    assert len(spans) == 19  # 22 faults, three of them pairs
    assert any(t.get_text().startswith("... and 7 more") for t in texts)
    tags = [t for t in texts if t.get_text().strip().isdigit() and t.get_bbox_patch() is not None]
    assert len(tags) == 19
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for i, (first, a) in enumerate(boxes):
        assert fig.bbox.x0 - 1 <= a.x0 and a.x1 <= fig.bbox.x1 + 1, first
        assert fig.bbox.y0 - 1 <= a.y0 and a.y1 <= fig.bbox.y1 + 1, first
        for second, b in boxes[i + 1 :]:
            assert not a.overlaps(b), (first, second)
