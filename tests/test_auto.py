"""tdlib checkpoints in their users' tools: transformers' Auto classes (with tdlib imported, and as remote code
without it), sentence-transformers, and the model card every saved directory carries. Each load runs in a fresh
process, as a user's would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from sentence_transformers import SentenceTransformer
from transformers import BertForSequenceClassification, BertModel

import tdlib
from tdlib.core.export import export_sentence_transformers
from tdlib.core.heads import BertMeanPooledForSequenceClassification
from tdlib.core.io import save_model_atomic
from tdlib.core.pretrained import load_tokenizer
from tdlib.data.glue import load_task
from tdlib.distill.proxies import _tokenised, embed, st_stsb, stsb_spearman

GLUE = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
IDS = [[2, 17, 40, 33, 8, 3], [2, 90, 11, 3, 0, 0]]

LOAD = """
import json, sys
{block}
import torch, transformers
path, kind = sys.argv[1], sys.argv[2]
ids = torch.tensor({ids})
cls = getattr(transformers, kind)
kwargs = json.loads(sys.argv[3])
try:
    model = cls.from_pretrained(path, **kwargs).eval()
except Exception as exc:
    print("\\nRESULT", json.dumps({{"error": type(exc).__name__ + ": " + str(exc)}}))
    raise SystemExit(0)
with torch.no_grad():
    out = model(input_ids=ids, attention_mask=(ids > 0).long())
tensor = out.logits if kind.endswith("Classification") else out.last_hidden_state
print("\\nRESULT", json.dumps({{"class": type(model).__name__, "out": tensor.tolist()}}))
"""


def _load(path, kind="AutoModel", with_tdlib=True, **kwargs) -> dict:
    block = "import tdlib" if with_tdlib else "sys.modules['tdlib'] = None  # an environment without tdlib"
    code = LOAD.format(block=block, ids=IDS)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(path.parent / "hf-home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code, str(path), kind, json.dumps(kwargs)], capture_output=True,
                          text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # (transformers asks "Do you wish to run the custom code?" on stdout before it refuses)
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _reference(path, kind="AutoModel") -> np.ndarray:
    model = tdlib.from_pretrained(path)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=(ids > 0).long())
    return (out.logits if kind.endswith("Classification") else out.last_hidden_state).numpy()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    torch.manual_seed(0)
    tdlib.compress(BertModel(tiny_config()), 4, 8).save_pretrained(str(root / "encoder"))
    torch.manual_seed(0)
    tdlib.compress(BertForSequenceClassification(tiny_config(num_labels=3)), 4, 8).save_pretrained(
        str(root / "classifier"))
    torch.manual_seed(0)
    head = tdlib.compress(BertMeanPooledForSequenceClassification(tiny_config(num_labels=2)), 4, 8)
    save_model_atomic(head, root / "mean-head")
    return root


def test_a_saved_checkpoint_names_its_type_and_carries_its_model_code(saved):
    config = json.loads((saved / "encoder" / "config.json").read_text())
    assert config["model_type"] == "tdlib_bert" and config["architectures"] == ["BertModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_tdlib.TdlibBertModel"
    assert (saved / "encoder" / "modeling_tdlib.py").is_file()


@pytest.mark.parametrize(("folder", "kind"), [("encoder", "AutoModel"),
                                              ("classifier", "AutoModelForSequenceClassification")])
def test_auto_classes_load_what_tdlib_loads_with_tdlib_and_as_remote_code_without_it(saved, folder, kind):
    path = saved / folder
    reference = _reference(path, kind)
    with_tdlib = _load(path, kind)
    assert with_tdlib["class"].startswith("TdlibBert")
    np.testing.assert_allclose(with_tdlib["out"], reference, atol=1e-5)
    refused = _load(path, kind, with_tdlib=False)
    assert "trust_remote_code" in refused["error"]
    remote = _load(path, kind, with_tdlib=False, trust_remote_code=True)
    np.testing.assert_allclose(remote["out"], reference, atol=1e-5)


def test_a_tdlib_head_is_one_clear_error_through_bert_s_cls_head_and_its_encoder_loads(saved):
    refused = _load(saved / "mean-head", "AutoModelForSequenceClassification")
    assert "BertMeanPooledForSequenceClassification" in refused["error"] and "tdlib.from_pretrained" in refused["error"]
    encoder = _load(saved / "mean-head", "AutoModel")
    assert encoder["class"] == "TdlibBertModel"


def test_every_saved_directory_has_a_model_card(saved):
    for folder in ("encoder", "classifier", "mean-head"):
        card = (saved / folder / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: transformers") and "IV-4-8" in card and "ren2022exploring" in card
    dense = saved / "dense"
    torch.manual_seed(0)
    save_model_atomic(BertModel(tiny_config()), dense)
    assert "A dense BERT saved by tdlib" in (dense / "README.md").read_text()


@pytest.mark.skipif(not (GLUE / "STS-B" / "dev.tsv").exists(), reason="shared GLUE data not present")
def test_sentence_transformers_loads_an_exported_student_and_its_evaluator_matches_the_proxy(minilm, tmp_path):
    student = tdlib.compress(minilm, 16, 96)
    out = export_sentence_transformers(student, tmp_path / "st")
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"
    assert "library_name: sentence-transformers" in (out / "README.md").read_text()
    with pytest.raises(tdlib.ConfigError, match="not empty"):
        export_sentence_transformers(student, out)
    tokenizer, dev = load_tokenizer("minilm"), load_task("stsb", "dev", str(GLUE)).select(range(300))
    pairs = tuple(_tokenised(tokenizer, list(dev[c]), 128) for c in ("text_a", "text_b"))
    for model, st in ((minilm, SentenceTransformer(str(tdlib.core.pretrained.resolve("minilm")), device="cpu")),
                      (student, SentenceTransformer(str(out), device="cpu"))):
        proxy = stsb_spearman(*(embed(model, p, 64, "fp32") for p in pairs), np.asarray(dev["label"], float))
        assert st_stsb(st, str(GLUE), max_pairs=300) == pytest.approx(proxy, abs=0.05)
