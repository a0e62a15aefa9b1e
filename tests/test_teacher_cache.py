"""The teacher cache: built once, reused, rebuilt when corrupt or foreign; the cached loss equals the live one."""

import json

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_config
from transformers import BertModel

from tdlib import compress
from tdlib.distill.stages import cached_distillation_step, distillation_step
from tdlib.distill.teacher_cache import TeacherCache


@pytest.fixture
def setup():
    torch.manual_seed(0)
    teacher = BertModel(tiny_config()).eval()
    ids = torch.randint(5, 120, (10, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[3, 8:] = 0
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})
    return teacher, data


def test_cached_targets_give_the_live_loss(tmp_path, setup):
    teacher, data = setup
    cache = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, batch_size=4, progress=False)
    student = compress(teacher, 4, 8).eval()
    rows = data.add_column("idx", list(range(len(data)))).with_format("torch")
    batch = rows[[7, 3, 0]]  # any order: rows are looked up by idx
    live = distillation_step(student, teacher, batch)
    cached = cached_distillation_step(student, cache, batch)
    for key in ("loss", "att", "rep"):  # 16-bit targets: equal to fp16 rounding
        assert float(cached[key]) == pytest.approx(float(live[key]), rel=1e-2, abs=1e-5)


def test_reused_then_rebuilt_when_corrupt_or_foreign(tmp_path, setup):
    teacher, data = setup
    first = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, progress=False)
    stamp = (first.path / "h.npy").stat().st_mtime_ns
    again = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, progress=False)
    assert again.path == first.path and (again.path / "h.npy").stat().st_mtime_ns == stamp  # reused
    reference = np.array(again.arrays["h"])
    # corrupt: a flipped byte fails the checksum, and the cache is rebuilt with the right values
    raw = bytearray((first.path / "h.npy").read_bytes())
    raw[-1] ^= 0xFF
    (first.path / "h.npy").write_bytes(bytes(raw))
    rebuilt = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, progress=False)
    np.testing.assert_array_equal(np.array(rebuilt.arrays["h"]), reference)
    # foreign: meta.json of another teacher in this key's folder is never read as this teacher's
    meta = json.loads((first.path / "meta.json").read_text())
    meta["identity"]["teacher"] = "other"
    (first.path / "meta.json").write_text(json.dumps(meta))
    assert TeacherCache.check(first.path, {"teacher": "tiny", "precision": "fp32", "rows": 10}) is None
    fixed = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, progress=False)
    assert json.loads((fixed.path / "meta.json").read_text())["identity"]["teacher"] == "tiny"
    # another identity gets its own folder
    other = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny", "corpus_sha": "x"}, teacher, data,
                                       progress=False)
    assert other.path != first.path


def test_all_layer_cache_gives_the_live_all_layer_loss(tmp_path, setup):
    """The all-layer objective reads every intermediate layer from the cache; the last-layer one refuses without."""
    from tdlib.core.errors import ConfigError

    teacher, data = setup
    rows = data.add_column("idx", list(range(len(data)))).with_format("torch")
    batch = rows[[2, 9, 3]]
    student = compress(teacher, 4, 8).eval()
    full = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, progress=False, all_layers=True)
    assert full.arrays["hs"].shape == (10, teacher.config.num_hidden_layers - 1, 12, teacher.config.hidden_size)
    live = distillation_step(student, teacher, batch, "all_layers_cos")
    cached = cached_distillation_step(student, full, batch, "all_layers_cos")
    for key in ("loss", "att", "rep", "layers", "cos"):
        assert float(cached[key]) == pytest.approx(float(live[key]), rel=1e-2, abs=1e-5)
    last_only = TeacherCache.build_or_open(tmp_path, {"teacher": "tiny"}, teacher, data, progress=False)
    assert last_only.path != full.path
    with pytest.raises(ConfigError, match="all_layers=True"):
        cached_distillation_step(student, last_only, batch, "all_layers_cos")


@pytest.fixture
def classifier_setup(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config(num_labels=3)).eval()
    teacher_dir = tmp_path / "finetune" / "rte-x" / "model"
    teacher.save_pretrained(str(teacher_dir))
    ids = torch.randint(5, 120, (10, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[3, 8:] = 0
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                                       "labels": [0, 1, 2, 0, 1, 2, 0, 1, 2, 0], "idx": list(range(10))})
    return teacher, teacher_dir, data.with_format("torch")


def test_teacher_logits_give_the_live_stage2_loss(classifier_setup):
    from tdlib.distill.stages import prediction_step
    from tdlib.distill.teacher_cache import cached_teacher_logits

    teacher, teacher_dir, data = classifier_setup
    targets = torch.from_numpy(cached_teacher_logits(teacher, teacher_dir, data, progress=False))
    assert targets.shape == (10, 3) and targets.dtype == torch.float32
    torch.manual_seed(1)
    student = type(teacher)(tiny_config(num_labels=3)).eval()
    batch = data[[7, 3, 0]]  # any order: rows are read at the batch's idx
    live = prediction_step(student, teacher, batch, regression=False)["loss"]
    cached = prediction_step(student, teacher, batch, regression=False, targets=targets)["loss"]
    assert float(cached) == pytest.approx(float(live), rel=1e-4)
    from tdlib.core.errors import ConfigError

    with pytest.raises(ConfigError, match="'idx' column"):
        prediction_step(student, teacher, {k: v for k, v in batch.items() if k != "idx"}, regression=False,
                        targets=targets)


def test_teacher_logits_reused_then_recomputed_when_corrupt_or_other(classifier_setup, monkeypatch):
    import tdlib.distill.forward
    import tdlib.distill.teacher_cache
    from tdlib.distill.teacher_cache import cached_teacher_logits

    teacher, teacher_dir, data = classifier_setup
    first = cached_teacher_logits(teacher, teacher_dir, data, progress=False)
    files = list((teacher_dir.parent / "logits").glob("*.npy"))
    assert len(files) == 1 and not list(files[0].parent.glob("*partial*"))
    calls = []
    real = tdlib.distill.forward.predict
    monkeypatch.setattr(tdlib.distill.teacher_cache, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
    np.testing.assert_array_equal(cached_teacher_logits(teacher, teacher_dir, data, progress=False), first)
    assert calls == []  # read back, not recomputed
    files[0].write_bytes(b"not an array")
    np.testing.assert_array_equal(cached_teacher_logits(teacher, teacher_dir, data, progress=False), first)
    assert len(calls) == 1  # a corrupt file is recomputed (and rewritten)
    cached_teacher_logits(teacher, teacher_dir, data.select(range(6)), progress=False)
    assert len(calls) == 2 and len(list(files[0].parent.glob("*.npy"))) == 2  # other rows: another file
    with torch.no_grad():
        teacher.classifier.bias += 1.0
    teacher.save_pretrained(str(teacher_dir))  # a retrained teacher never reads the old logits
    assert not np.allclose(cached_teacher_logits(teacher, teacher_dir, data, progress=False), first)
