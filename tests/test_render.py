"""Rendering geometry: crops land where the box is, context is honoured, decode once per image."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import fiftyone as fo

import grader.render as render
from grader.render import (MAGENTA, PAD_VALUE, crop_window, crop_with_box, distinct_colors,
                           iter_box_crops, render_overlay)
from grader.report import RunReport

from conftest import write_random_images


def coord_image(h: int, w: int) -> np.ndarray:
    """R = x, G = y (mod 256), B = 0: any pixel tells where in the image it came from."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, np.zeros_like(xx)], axis=-1).astype(np.uint8)


def magenta_bbox(img) -> tuple[int, int, int, int]:
    a = np.asarray(img)
    ys, xs = np.nonzero(np.all(a == MAGENTA, axis=-1))
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_crop_size_location_and_drawn_box():
    img = coord_image(200, 240)
    box = [60, 50, 140, 110]  # 80 x 60
    crop = crop_with_box(img, box, context=1.5)
    assert crop.size == (120, 90)  # context x box size on each side
    win = crop_window(img.shape[:2], box, context=1.5)
    a = np.asarray(crop)
    # Top-left crop pixel is image pixel (x0, y0): the crop is cut from the right place.
    assert (a[0, 0, 0], a[0, 0, 1]) == (win.x0, win.y0) == (40, 35)
    # The box is centred and its outline sits exactly on the box's edge pixels.
    assert magenta_bbox(crop) == (20, 15, 99, 74)
    # 3 px outline: pixel 3 px inside the edge keeps the image content.
    assert tuple(a[15 + 1, 20 + 2]) == tuple(MAGENTA)
    assert tuple(a[15 + 3, 20 + 3][:2]) == (40 + 23, 35 + 18)


def test_out_size_draws_after_resize_at_fixed_thickness():
    img = coord_image(300, 300)
    crop = crop_with_box(img, [100, 100, 140, 180], context=1.25, out_size=64)
    assert crop.size == (64, 64)
    x1, y1, x2, y2 = magenta_bbox(crop)
    # window 50 x 100 -> box at [5, 10, 45, 90] in window px -> x scale 64/50, y scale 0.64.
    assert abs(x1 - 5 * 64 / 50) <= 1 and abs(x2 - (45 * 64 / 50 - 1)) <= 1
    assert abs(y1 - 10 * 0.64) <= 1 and abs(y2 - (90 * 0.64 - 1)) <= 1
    a = np.asarray(crop)
    row = np.all(a[32] == MAGENTA, axis=-1)
    assert row[x1:x1 + 3].all() and not row[x1 + 3:x1 + 6].any()


def test_window_shifted_inside_image_near_edges_no_padding():
    img = coord_image(100, 100)
    crop = crop_with_box(img, [0, 0, 40, 40], context=1.5)
    a = np.asarray(crop)
    assert crop.size == (60, 60)
    assert (a[5, 5, 0], a[5, 5, 1]) == (5, 5)       # clamped to the image corner, not padded
    assert not np.all(a == PAD_VALUE, axis=-1).any()
    assert magenta_bbox(crop) == (0, 0, 39, 39)


def test_window_larger_than_image_is_padded():
    img = coord_image(50, 50)
    crop = crop_with_box(img, [5, 5, 45, 45], context=1.5)
    a = np.asarray(crop)
    assert crop.size == (60, 60)
    assert tuple(a[0, 0]) == (PAD_VALUE,) * 3
    assert magenta_bbox(crop) == (10, 10, 49, 49)    # box stays where it is, padding around


@settings(max_examples=60, deadline=None)
@given(x=st.floats(0, 150), y=st.floats(0, 100), w=st.floats(4, 120), h=st.floats(4, 90),
       context=st.floats(1.2, 1.5), jitter=st.floats(0, 0.5), seed=st.integers(0, 10 ** 6))
@example(x=1.75, y=0.0, w=4.5, h=4.0, context=1.21875, jitter=0.0, seed=0)   # found in CI
def test_jittered_window_keeps_box_inside_and_honours_context(x, y, w, h, context, jitter, seed):
    H, W = 200, 260
    box = [x, y, min(x + w, W), min(y + h, H)]
    win = crop_window((H, W), box, context=context, jitter=jitter, rng=np.random.default_rng(seed))
    bw, bh = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
    # context x the box, but never fewer pixels than the box's whole-pixel span
    span_w = math.ceil(box[2]) - math.floor(box[0])
    span_h = math.ceil(box[3]) - math.floor(box[1])
    assert win.width == max(round(context * bw), span_w, 1)
    assert win.height == max(round(context * bh), span_h, 1)
    bx1, by1, bx2, by2 = win.box_in_crop
    assert bx1 >= 0 and by1 >= 0 and bx2 <= win.width + 1e-9 and by2 <= win.height + 1e-9


def test_jitter_moves_the_centre_reproducibly():
    img = coord_image(400, 400)
    box = [150, 150, 250, 250]
    offs = {crop_window(img.shape[:2], box, jitter=0.15, rng=np.random.default_rng(s)).x0
            for s in range(20)}
    assert len(offs) > 5  # not always centred
    a = crop_window(img.shape[:2], box, jitter=0.15, rng=np.random.default_rng(3))
    b = crop_window(img.shape[:2], box, jitter=0.15, rng=np.random.default_rng(3))
    assert a == b


def test_render_overlay_colours_each_box_and_adds_legend():
    img = np.zeros((100, 120, 3), np.uint8)
    boxes = [[10, 10, 50, 50], [60, 20, 110, 90]]
    out = render_overlay(img, boxes, ["cat", "dog"])
    assert out.height == 100 and out.width > 120       # legend strip to the right
    a = np.asarray(out)
    cols = distinct_colors(2)
    assert cols[0] != cols[1]
    assert tuple(a[30, 10]) == cols[0] and tuple(a[60, 109]) == cols[1]
    # Legend swatches use the same colours.
    legend = a[:, 120:]
    for c in cols:
        assert np.all(legend == c, axis=-1).any()
    no_legend = render_overlay(img, boxes, ["cat", "dog"], legend=False)
    assert no_legend.size == (120, 100)
    with pytest.raises(ValueError):
        render_overlay(img, boxes, ["cat"])


@pytest.fixture()
def crop_dataset(tmp_path):
    paths = write_random_images(tmp_path / "imgs", 4, size=(80, 100))
    paths[2] = str(tmp_path / "imgs" / "missing.jpg")
    ds = fo.Dataset()
    samples = []
    for i, p in enumerate(paths):
        dets = [fo.Detection(label="cat", bounding_box=[0.1, 0.1, 0.3, 0.4]),
                fo.Detection(label="dog", bounding_box=[0.5, 0.4, 0.4, 0.5])]
        if i == 1:
            dets.append(fo.Detection(label="dog", bounding_box=[0.5, 0.5, 0.0, 0.2]))  # degenerate
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=dets)))
    # no labels (and no file): nothing to render, so no decode and no skip
    samples.append(fo.Sample(filepath=str(tmp_path / "imgs" / "unlabelled.jpg")))
    ds.add_samples(samples)
    yield ds
    ds.delete()


def test_iter_box_crops_decodes_once_and_counts_skips(crop_dataset, monkeypatch):
    calls = []
    real = render.load_rgb
    monkeypatch.setattr(render, "load_rgb", lambda p: calls.append(p) or real(p))
    rep = RunReport("t")
    crops = list(iter_box_crops(crop_dataset, "ground_truth", out_size=32, report=rep))
    assert len(calls) == 4                                # one decode per image
    assert len(crops) == 6                                # 3 readable images x 2 good boxes
    assert rep.skipped == {"unreadable_image": 2, "degenerate_box": 1}
    assert rep.samples_seen == 5
    assert all(c.image.size == (32, 32) for c in crops)
    ids = crop_dataset.values("ground_truth.detections.id", unwind=True)
    assert {c.label_id for c in crops} <= set(ids)
    first = crop_dataset.first()
    assert (crops[0].sample_id, crops[0].label_id, crops[0].label) == (
        first.id, first.ground_truth.detections[0].id, "cat")
    # 100 x 80 image: box [0.1, 0.1, 0.3, 0.4] -> [10, 8, 40, 40] px
    assert np.allclose(crops[0].box_xyxy, [10, 8, 40, 40])
    sid, lid, label, image = crops[0]          # unpacks like a 4-tuple
    assert (sid, lid, label, image) == (crops[0].sample_id, crops[0].label_id, "cat", crops[0].image)


def test_iter_box_crops_threaded_matches_serial(crop_dataset):
    a = list(iter_box_crops(crop_dataset, "ground_truth", out_size=24, jitter=0.2, seed=5))
    b = list(iter_box_crops(crop_dataset, "ground_truth", out_size=24, jitter=0.2, seed=5,
                            num_workers=2, prefetch=2))
    assert [c.label_id for c in a] == [c.label_id for c in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))


def test_process_pool_renders_the_same_crops(coco128):
    """Rendering in spawned processes yields exactly the serial crops, in the same order."""
    from grader.render import iter_box_crops

    view = coco128.limit(4)
    serial = list(iter_box_crops(view, "ground_truth", out_size=48, jitter=0.1, seed=3))
    procs = list(iter_box_crops(view, "ground_truth", out_size=48, jitter=0.1, seed=3,
                                num_workers=2, pool="processes"))
    assert [(c.sample_id, c.label_id) for c in procs] == [(c.sample_id, c.label_id) for c in serial]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(serial, procs))


def test_prefetch_map_closed_early_does_not_wait_for_its_workers():
    """A consumer that stops early closes the look-ahead without joining the workers (queued
    items are cancelled, the running one ends on its own): the garbage collector may close a
    dropped one inside another thread's start-up, where a join deadlocks."""
    import time

    from grader.parallel import prefetch_map

    started = []

    def slow(i):
        started.append(i)
        time.sleep(0.05 if i == 0 else 1.0)
        return i

    gen = prefetch_map(slow, range(8), workers=2, prefetch=4)
    assert next(gen) == 0
    t = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t < 0.5
    time.sleep(0.1)
    assert len(started) <= 3          # the queued items were cancelled, never started
    # run to the end, the results keep their order
    assert list(prefetch_map(lambda i: i * i, range(20), workers=2, prefetch=3)) == [
        i * i for i in range(20)]


def test_wide_single_channel_images_keep_their_contrast(tmp_path):
    """A 12-bit scan in a 16-bit PNG and a float TIFF decode with their range stretched to
    0-255 (PIL's convert("RGB") clipped them at 255: a white image); 8-bit files unchanged."""
    import cv2
    from PIL import Image

    from grader.images import load_rgb

    scan = np.full((60, 80), 300, np.uint16)        # 12-bit values, as X-ray / microscopy
    scan[20:40, 30:60] = 4000
    scan[0, 0] = 100
    cv2.imwrite(str(tmp_path / "scan16.png"), scan)
    Image.fromarray(scan.astype(np.float32) / 7.0).save(tmp_path / "scan.tif")
    for name in ("scan16.png", "scan.tif"):
        rgb = load_rgb(str(tmp_path / name))
        assert rgb.dtype == np.uint8 and rgb.shape == (60, 80, 3)
        assert rgb.min() == 0 and rgb.max() == 255
        assert (rgb[..., 0] == rgb[..., 2]).all()
        assert rgb[30, 40, 0] == 255 and rgb[5, 5, 0] == round((300 - 100) * 255 / 3900)
    rgba = np.random.default_rng(0).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    assert (load_rgb(str(tmp_path / "c.png"))
            == np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))).all()
