"""YOLOX-Nano in PyTorch: the same rows as cv2.dnn, a training loss that fits, out-of-fold
predictions on a class no shipped detector knows, and grade()'s finetune step."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2torch")

from conftest import raccoon_subset, shared_path  # noqa: E402

from grader.detectors.finetune import (FinetuneSettings, crossfit_detector,  # noqa: E402
                                       load_training_images, simota_assign, train_fold)
from grader.detectors.torch_yolox import TorchYolox, decode  # noqa: E402


def _yolox_dir():
    d = shared_path("detectors")
    if d is None or not (d / "yolox-nano" / "model.onnx").is_file():
        pytest.skip("../shared/data/detectors/yolox-nano is not present")
    return d / "yolox-nano"


@pytest.fixture(autouse=True)
def _one_thread():
    # Two torch threads on two shared cores spin against other processes (10x slower here).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_torch_yolox_matches_cv2dnn():
    from grader.detectors.cvdnn import YoloXNano
    from grader.images import load_rgb

    d = _yolox_dir()
    images = sorted((shared_path("coco128") / "images").glob("*.jpg"))[:3]
    ims = [load_rgb(str(p)) for p in images]
    ref = YoloXNano(str(d)).predict(ims)
    got = TorchYolox(str(d), device="cpu").predict(ims)
    for a, b in zip(ref, got):
        assert a.shape == b.shape == (3549, 84)
        assert np.abs(a[:, :4] - b[:, :4]).max() < 0.1      # pixels
        assert np.abs(a[:, 4:] - b[:, 4:]).max() < 1e-4     # per-class scores


def test_torch_yolox_rejects_too_many_classes():
    with pytest.raises(ValueError, match="80 class channels"):
        TorchYolox(str(_yolox_dir()), [f"c{i}" for i in range(81)], device="cpu")


def test_simota_assigns_anchors_inside_the_box_to_it():
    from grader.detectors.cvdnn import yolox_grid

    grid, stride = (torch.from_numpy(x) for x in yolox_grid(128))
    centers = (grid + 0.5) * stride
    gt = torch.tensor([[32.0, 32.0, 96.0, 96.0]])
    # predictions: a box at each anchor point the size of the GT box
    pred = torch.cat([centers - 32, centers + 32], 1)
    obj = torch.zeros(len(pred))
    cls = torch.zeros(len(pred), 2)
    fg, matched, iou = simota_assign(pred, obj, cls, gt, torch.tensor([1]), centers, stride[:, 0])
    assert fg.any()
    c = centers[fg]
    assert ((c[:, 0] > 32) & (c[:, 0] < 96) & (c[:, 1] > 32) & (c[:, 1] < 96)).all()
    assert (matched[fg] == 0).all() and (iou[fg] > 0.5).all()


def test_training_fits_the_labels(tmp_path):
    """A few epochs on 6 raccoon photos: the loss falls and the decoded head finds the boxes."""
    ds = raccoon_subset(6, "ft-fit")
    try:
        data = load_training_images(ds, "ground_truth", ["raccoon"], 224)
        assert len(data.ids) == 6 and sum(len(b) for b in data.boxes) >= 6
        losses: list[float] = []
        # 20 epochs: at 10 the outcome hung on the machine's float rounding (>= 5 of 6 boxes
        # found on earlier CI machines, 3-4 on a later one); at 15 and 20 all 6 were found
        st = FinetuneSettings(epochs=20, batch_size=2, input_size=224, min_size=224, lr=2e-4,
                              device="cpu")
        state = train_fold(data, 1, st, str(_yolox_dir()), losses=losses)
        assert losses[-1] < 0.7 * losses[0], losses
        det = TorchYolox(str(_yolox_dir()), ["raccoon"], state_dict=state, input_size=224,
                         device="cpu")
        from grader.detectors.cvdnn import yolox_grid

        g, s = (torch.from_numpy(x) for x in yolox_grid(224))
        with torch.inference_mode():
            out = det.module(torch.from_numpy(data.blobs.astype(np.float32)))
            boxes = decode(out, g, s)
            score = torch.sigmoid(out[..., 4]) * torch.sigmoid(out[..., 5])
        hits = 0
        for i in range(6):  # the best-scored box overlaps a labelled raccoon
            best = boxes[i, score[i].argmax()]
            gt = torch.from_numpy(data.boxes[i])
            lt = torch.max(best[:2], gt[:, :2])
            rb = torch.min(best[2:], gt[:, 2:])
            inter = (rb - lt).clamp(min=0).prod(1)
            union = (best[2:] - best[:2]).prod() + (gt[:, 2:] - gt[:, :2]).prod(1) - inter
            hits += int((inter / union).max() > 0.5)
        assert hits >= 5
    finally:
        ds.delete()


def test_crossfit_writes_out_of_fold_predictions_and_reuses_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_GRADER_CACHE", str(tmp_path / "cache"))
    ds = raccoon_subset(8, "ft-crossfit")
    try:
        before = ds.values("ground_truth.detections.bounding_box")
        st = {"epochs": 1, "batch_size": 4, "input_size": 224, "min_size": 224, "device": "cpu"}
        # one epoch: mechanics, not quality (a low threshold so every image has boxes)
        rep = crossfit_detector(ds, "ground_truth", "ft_preds", settings=st, conf_threshold=0.001)
        assert [t["fold"] for t in rep.info["trained"]] == [0, 1]
        assert rep.info["classes"] == ["raccoon"] and rep.samples_scored == 8
        assert all(t["images"] == 4 for t in rep.info["trained"])  # the other fold's images only
        probs = [p for ps in ds.values("ft_preds.detections.probs") for p in ps]
        assert probs and all(len(p) == 1 for p in probs)
        assert set(ds.distinct("ft_preds.detections.label")) <= {"raccoon"}
        assert ds.values("ground_truth.detections.bounding_box") == before  # labels untouched
        again = crossfit_detector(ds, "ground_truth", "ft_preds", settings=st, conf_threshold=0.001)
        assert again.info["trained"] == [] and len(again.info["reused"]) == 2
        # bring your own detector: a custom-class model (the fold checkpoint) drives grade()
        from grader.pipeline import grade

        det = TorchYolox(str(_yolox_dir()), ["raccoon"], input_size=224, device="cpu",
                         state_dict=torch.load(again.info["reused"][0], weights_only=True))
        g = grade(ds, "ground_truth", detector=det, zoom=False, overlooked=False, boxgrader=False,
                  ensemble=False, consistency=False)
        assert "finetune" in g.not_run and "detector" in g.reports and "cleanlab" in g.reports
        assert set(ds.distinct("lg_predictions.detections.label")) <= {"raccoon"}
        assert ds.count("ground_truth.detections.cleanlab_badloc") == ds.count("ground_truth.detections")
        with pytest.raises(ValueError, match="folds must be >= 2"):
            crossfit_detector(ds, "ground_truth", "ft_preds", settings={**st, "folds": 1})
    finally:
        ds.delete()


def test_grade_fine_tunes_where_no_shipped_detector_knows_the_classes(tmp_path, monkeypatch,
                                                                     coco128_base):
    from grader.pipeline import grade, will_finetune

    monkeypatch.setenv("LABEL_GRADER_CACHE", str(tmp_path / "cache"))
    ds = raccoon_subset(8, "ft-grade")
    try:
        off = dict(zoom=False, overlooked=False, boxgrader=False, ensemble=False, cleanlab=False,
                   consistency=False)
        # 8 images: too few to fine-tune on unless asked
        assert not will_finetune(ds) and will_finetune(ds, finetune=True)
        assert "fewer than 20" in grade(ds, **off).not_run["finetune"]
        monkeypatch.setattr("grader.pipeline.FINETUNE_MIN_IMAGES", 4)
        # what the App's grade operator asks before it decides to delegate the run
        assert will_finetune(ds) and not will_finetune(coco128_base)
        assert not will_finetune(ds, finetune=False) and not will_finetune(ds, pred_field="p")
        assert not will_finetune(ds, detector="yolov3-tiny") and will_finetune(coco128_base, finetune=True)
        import fiftyone.operators as foo

        op = foo.get_operator("@label-grader/label-grader/grade_labels")
        # (the box grader's training delegates these runs too: left out here)
        monkeypatch.setitem(op.resolve_delegation.__func__.__globals__, "will_train_boxgrader",
                            lambda *a, **k: False)
        ctx = lambda **p: SimpleNamespace(params={"target": "DATASET", **p}, view=None, dataset=ds,
                                          selected=[])
        assert op.resolve_delegation(ctx()) and op.resolve_delegation(ctx(finetune=True))
        assert not op.resolve_delegation(ctx(finetune=False))
        assert not op.resolve_delegation(ctx(detector="none"))
        g = grade(ds, detector_classes=None, detector=None, **off)
        assert "finetune" in g.not_run
        # the opt-out: the COCO detector predicts, its own class names
        g = grade(ds, finetune=False, **off)
        assert "finetune" in g.not_run and "detector" in g.reports
        assert set(ds.distinct("lg_predictions.detections.label")) - {"raccoon"}  # COCO names
        if not torch.cuda.is_available():
            # the default on classes no shipped detector knows, on a CPU too, each fold model
            # trained on at most FINETUNE_CPU_MAX_IMAGES images
            monkeypatch.setattr("grader.pipeline.FINETUNE_CPU_MAX_IMAGES", 3)
            g = grade(ds, **off)
            info = g.reports["finetune"].info
            assert g.not_run.get("detector") == "predictions given" and info["device"] == "cpu"
            assert info["settings"]["max_images"] == 3
            assert [t["images"] for t in info["trained"]] == [3, 3]
            assert set(ds.distinct("lg_predictions.detections.label")) <= {"raccoon"}
        g = grade(ds, finetune={"epochs": 1, "batch_size": 4, "input_size": 224, "min_size": 224,
                                "device": "cpu", "conf_threshold": 0.001},
                  **{**off, "cleanlab": {}, "overlooked": {}})
        assert "finetune" in g.reports and g.not_run.get("detector") == "predictions given"
        assert g.pred_field == "lg_predictions"
        assert set(ds.distinct("lg_predictions.detections.label")) <= {"raccoon"}
        assert "cleanlab" in g.reports and g.reports["cleanlab"].labels_scored > 0
        # overlooked objects: the fine-tuned predictions' candidates and the COCO detector's
        # are both measured on the labelled boxes, and the better source is used
        info = g.reports["overlooked"].info
        assert set(info["label_recall"]) == {"lg_predictions", "yolox-nano"}
        best = max(info["label_recall"], key=info["label_recall"].get)
        assert info["candidates_from"] == best and g.reports["overlooked"].judge.endswith(best)
        assert set(ds.distinct("ground_truth_overlooked.detections.label")) <= {"raccoon"}
    finally:
        ds.delete()
