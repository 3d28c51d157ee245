"""Fault injection (issue 9): output-field guards, redaction, kills mid-write, concurrent fixes,
dead/hanging endpoints, bad keys and bad parameters — each asserting nothing is lost, mixed or leaked."""
from __future__ import annotations

import fiftyone as fo
import pytest

from grader.fields import claim_output_field, field_owner, guard_output_field
from grader.redact import redact


# ---------------------------------------------------------------- output-field guard

def test_guard_output_field_rules(synthetic_dataset):
    ds = synthetic_dataset
    # never the field being judged, even with overwrite=True
    with pytest.raises(ValueError, match="also an input"):
        guard_output_field(ds, "ground_truth", inputs=["ground_truth"], overwrite=True)
    # an existing user field with values: refused unless overwrite=True
    with pytest.raises(ValueError, match="overwrite=True"):
        guard_output_field(ds, "predictions", owner="detector")
    guard_output_field(ds, "predictions", overwrite=True)
    # a field of another type: refused even with overwrite=True
    ds.add_sample_field("a_number", fo.FloatField)
    with pytest.raises(ValueError, match="type FloatField"):
        guard_output_field(ds, "a_number", overwrite=True)
    guard_output_field(ds, "a_number", kind=fo.FloatField)  # same type, empty: fine
    # missing field: fine; after claiming, the same owner may rewrite, another may not
    guard_output_field(ds, "lg_new")
    claim_output_field(ds, "lg_new", owner="cleanlab")
    assert field_owner(ds, "lg_new") == "cleanlab"
    ds.set_values("lg_new", [fo.Detections(detections=[fo.Detection(label="x")])] * len(ds))
    guard_output_field(ds, "lg_new", owner="cleanlab")
    with pytest.raises(ValueError, match="created by 'cleanlab'"):
        guard_output_field(ds, "lg_new", owner="detector")
    assert ds.count("ground_truth.detections") == 18  # nothing was written by the guard


def test_redact_masks_every_credential_shape():
    key = "sk-live-0123456789abcdef\n"
    texts = [
        f"InvalidHeader: Invalid return character or leading space in header: Authorization {('Bearer ' + key)!r}",
        '{"error": {"echo": {"Authorization": "Bearer hunter2hunter2"}}}',
        "GET /v1?api_key=hunter2hunter2&model=x",
        '{"api_key": "hunter2hunter2"}',
        "x-api-key: hunter2hunter2",
        f"raw key {key}",
    ]
    for t in texts:
        out = redact(t, [key])
        assert "hunter2hunter2" not in out and "0123456789abcdef" not in out, out
        assert "[REDACTED]" in out
    assert redact("nothing secret here: max_tokens=64") == "nothing secret here: max_tokens=64"
    assert redact("my custom key abcd-efgh", ["abcd-efgh"]) == "my custom key [REDACTED]"
