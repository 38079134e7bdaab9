"""Preparation's length histogram: drawn in the drawing process (a spawned process that imports
matplotlib while the step works), the same picture as drawn in the step's own process, drawn
here when that process dies, and with plain-text tick labels."""

from __future__ import annotations

import multiprocessing
import os

from ml_exp.steps.coverage import lengths_figure, lengths_png
from ml_exp.steps.drawing import Drawing

LENGTHS = {"train": [3, 50, 200, 120, 900, 4000], "test": [5, 60]}


def where_drawn() -> str:
    return "child" if multiprocessing.parent_process() is not None else "here"


def die_in_the_child() -> str:
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # the drawing process dies (killed, out of memory)
    return "here"


def test_the_histogram_drawn_in_the_drawing_process_is_the_one_drawn_here(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with Drawing() as drawing:
        where = drawing.draw(where_drawn)
        picture = drawing.draw(lengths_png, LENGTHS, 128, "chunks", "minilm")
        assert where.png() == "child"
        png = picture.png()
    assert png.startswith(b"\x89PNG") and png == lengths_png(LENGTHS, 128, "chunks", "minilm")


def test_a_picture_is_drawn_here_when_the_drawing_process_dies(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with Drawing() as drawing:
        assert drawing.draw(die_in_the_child).png() == "here"
        assert drawing.draw(where_drawn).png() == "here"  # the broken pool takes no more work


def test_one_core_draws_here(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with Drawing() as drawing:
        assert drawing.draw(where_drawn).png() == "here"


def test_unknown_lengths_draw_nothing():
    assert lengths_png({"train": [5, -1]}, 128, "truncate", "m") is None
    assert lengths_png({"train": []}, 128, "truncate", "m") is None


def test_the_length_axis_is_labelled_in_plain_numbers():
    # matplotlib's log axis labels are mathtext ("$\\mathdefault{10^{2}}$"), which the steps draw
    # literally (literal_text): the histogram sets plain ones
    for lengths in (LENGTHS, {"train": [60, 90, 130]}):  # several decades; less than one (minor labels)
        figure = lengths_figure(lengths, 128, "truncate", "m")
        figure.canvas.draw()
        labels = [t.get_text() for t in figure.axes[0].get_xticklabels(minor=False)]
        labels += [t.get_text() for t in figure.axes[0].get_xticklabels(minor=True)]
        assert "100" in labels and not [text for text in labels if "$" in text or "mathdefault" in text]


def test_after_a_pause_the_next_picture_starts_another_drawing_process(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with Drawing() as drawing:
        first = drawing.draw(os.getpid).png()
        drawing.pause()  # preparation, before forking the map's workers
        second = drawing.draw(os.getpid).png()
    assert os.getpid() not in (first, second) and first != second
