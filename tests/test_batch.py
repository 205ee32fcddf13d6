"""`batch.generate_batch`: one file per image, in input order, export overlapped with the next image's sampling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pixal3d.batch import generate_batch
from pixal3d.errors import InputError
from pixal3d.geometry.export import ExportOptions


class FakeAsset:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log, self.timings = name, log, {"sample": 0.01}

    def export(self, path, faces, texture_size, image_format, include_pbr, device) -> Path:
        self.log.append(("export start", self.name, threading.current_thread().name))
        time.sleep(0.05)
        Path(path).write_text(self.name)
        self.log.append(("export end", self.name))
        return Path(path)


class FakePipe:
    def __init__(self, fail_on: str | None = None) -> None:
        self.log: list = []
        self.fail_on = fail_on

    def __call__(self, image: str, faces: int, texture_size: int, **kwargs) -> FakeAsset:
        self.log.append(("sample", image))
        if image == self.fail_on:
            raise RuntimeError(f"no structure for {image}")
        time.sleep(0.05)
        return FakeAsset(image, self.log)


def test_items_come_in_order_and_exports_overlap_the_next_sampling(tmp_path: Path) -> None:
    pipe = FakePipe()
    names = ["a", "b", "c"]
    items = list(generate_batch(pipe, names, [tmp_path / f"{n}.glb" for n in names], ExportOptions(), seed=3))
    assert [i.image for i in items] == names
    assert [(tmp_path / f"{n}.glb").read_text() for n in names] == names
    assert all("export" in i.timings and "sample" in i.timings for i in items)
    # b is sampled before a's export has finished: the export ran on the worker thread meanwhile.
    log = pipe.log
    assert log.index(("sample", "b")) < log.index(("export end", "a"))
    assert all(e[2].startswith("pixal3d-export") for e in log if e[0] == "export start")


def test_a_failing_image_still_yields_the_previous_one_then_raises(tmp_path: Path) -> None:
    pipe = FakePipe(fail_on="b")
    got = []
    with pytest.raises(RuntimeError, match="no structure for b"):
        for item in generate_batch(pipe, ["a", "b", "c"], [tmp_path / f"{n}.glb" for n in "abc"]):
            got.append(item.image)
    assert got == ["a"] and (tmp_path / "a.glb").is_file() and not (tmp_path / "c.glb").exists()


def test_outputs_are_checked_before_any_work(tmp_path: Path) -> None:
    pipe = FakePipe()
    with pytest.raises(InputError, match="one output per image"):
        list(generate_batch(pipe, ["a", "b"], [tmp_path / "a.glb"]))
    with pytest.raises(InputError, match="must end in"):
        list(generate_batch(pipe, ["a"], [tmp_path / "a.stl"]))
    assert pipe.log == []
