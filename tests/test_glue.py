import os
from pathlib import Path

import numpy as np
import pytest

from tdlib.core.errors import ConfigError, DataError
from tdlib.data.glue import TASKS, compute_metrics, encode, glue_average, load_task, task_file

SHARED = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
needs_shared = pytest.mark.skipif(not (SHARED / "RTE" / "dev.tsv").exists(), reason="shared GLUE data not present")


def write(dir_: Path, task: str, split: str, text: str, bom: bool = False) -> Path:
    path = dir_ / TASKS[task].name / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_tsv_layouts_and_label_ids(tmp_path):
    write(tmp_path, "cola", "dev", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode sailors the.\n")
    write(tmp_path, "mrpc", "dev", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA \"quoted\" one.\tB.\n",
          bom=True)
    write(tmp_path, "rte", "dev", "index\tsentence1\tsentence2\tlabel\n0\tP.\tH.\tnot_entailment\n")
    write(tmp_path, "stsb", "dev", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
          "sentence2\tscore\n0\tg\tf\ty\t0\tn\tn\tA man.\tA guy.\t4.250\n")
    cola = load_task("cola", "dev", tmp_path)
    assert cola["label"] == [1, 0] and cola["text_a"][1] == "Rode sailors the." and cola["text_b"] == ["", ""]
    mrpc = load_task("MRPC", "dev", tmp_path)
    assert mrpc["text_a"] == ['A "quoted" one.'] and mrpc["label"] == [1]  # BOM and quotes survive
    assert load_task("rte", "dev", tmp_path)["label"] == [1]  # hub order: entailment=0
    assert load_task("sts-b", "dev", tmp_path)["label"] == [4.25]


def test_bad_data_gets_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="unknown GLUE task 'wnli2'"):
        load_task("wnli2", "dev", tmp_path)
    with pytest.raises(DataError, match=r"RTE/dev.tsv not found"):
        load_task("rte", "dev", tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        task_file("rte", "test", tmp_path)
    write(tmp_path, "rte", "dev", "index\tsentence1\tsentence2\tlabel\n0\tP.\tH.\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: 3 tab-separated fields, expected 4"):
        load_task("rte", "dev", tmp_path)
    write(tmp_path, "rte", "dev", "index\tsentence1\tsentence2\tlabel\n0\tP.\tH.\tmaybe\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: label 'maybe' is not one of"):
        load_task("rte", "dev", tmp_path)
    write(tmp_path, "sst2", "dev", "")
    with pytest.raises(DataError, match="is empty"):
        load_task("sst2", "dev", tmp_path)
    write(tmp_path, "sst2", "dev", "text\tlabel\nx\t1\n")
    with pytest.raises(DataError, match="header lacks column 'sentence'"):
        load_task("sst2", "dev", tmp_path)


@needs_shared
@pytest.mark.parametrize("task,split,rows", [("cola", "dev", 1043), ("sst2", "dev", 872), ("mrpc", "dev", 408),
                                             ("stsb", "dev", 1500), ("rte", "dev", 277), ("rte", "train", 2490),
                                             ("mrpc", "train", 3668), ("cola", "train", 8551)])
def test_shared_glue_row_counts_match_provenance(task, split, rows):
    data = load_task(task, split, SHARED)
    assert len(data) == rows
    assert set(data.column_names) == {"text_a", "text_b", "label"}


@needs_shared
def test_shared_label_balance_matches_provenance():
    assert sum(load_task("mrpc", "dev", SHARED)["label"]) == 279
    assert sum(load_task("rte", "dev", SHARED)["label"]) == 131  # not_entailment
    assert sum(load_task("cola", "dev", SHARED)["label"]) == 721


def test_subsampling_is_seeded(tmp_path):
    write(tmp_path, "sst2", "train", "sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(50)))
    a = load_task("sst2", "train", tmp_path, max_examples=10, seed=1)
    b = load_task("sst2", "train", tmp_path, max_examples=10, seed=1)
    assert len(a) == 10 and a["text_a"] == b["text_a"]


def test_metrics_as_reported():
    gold = np.array([1, 0, 1, 1, 0, 1])
    pred = np.array([1, 0, 0, 1, 1, 1])
    cola = compute_metrics("cola", pred, gold)
    assert cola["mcc"] == pytest.approx(0.25) and cola["score"] == cola["mcc"]
    mrpc = compute_metrics("mrpc", np.eye(2)[pred], gold)  # logits are argmax-ed
    assert mrpc["acc"] == pytest.approx(4 / 6) and mrpc["f1"] == pytest.approx(0.75)
    assert mrpc["score"] == pytest.approx((0.75 + 4 / 6) / 2)
    sts = compute_metrics("stsb", [[1.0], [2.0], [3.5]], [1.0, 2.0, 3.0])
    assert sts["spearman"] == pytest.approx(1.0) and 0.98 < sts["pearson"] < 1.0
    assert glue_average({"cola": 0.5, "mnli-m": 0.8, "mnli-mm": 0.9}) == pytest.approx(2.2 / 3)
    with pytest.raises(DataError, match="3 predictions for 2 labels"):
        compute_metrics("rte", [0, 1, 1], [0, 1])


def test_encode_uses_the_task_length(tmp_path):
    from tdlib.core.pretrained import load_tokenizer

    write(tmp_path, "rte", "dev", "index\tsentence1\tsentence2\tlabel\n0\tA premise.\tA hypothesis.\tentailment\n")
    enc = encode(load_task("rte", "dev", tmp_path), load_tokenizer("minilm"), "rte", padding=True)
    assert len(enc["input_ids"][0]) == 128 and 0 in enc["token_type_ids"][0] and 1 in enc["token_type_ids"][0]
    write(tmp_path, "sst2", "dev", "sentence\tlabel\ngreat film\t1\nan entirely forgettable film\t0\n")
    data = load_task("sst2", "dev", tmp_path)
    assert len(encode(data, load_tokenizer("minilm"), "sst2", padding=True)["input_ids"][0]) == 64
    long = "word " * 200
    write(tmp_path, "cola", "dev", f"src\t1\t\t{long}\n")
    assert len(encode(load_task("cola", "dev", tmp_path), load_tokenizer("minilm"), "cola")["input_ids"][0]) == 64


def test_unpadded_examples_batch_to_their_longest_and_predict_the_same(tmp_path):
    """Dynamic padding (the default) changes no prediction: the mask hides the padding either way."""
    import torch

    from tdlib.core.pretrained import load_tokenizer
    from tdlib.data.collate import pad_collate
    from tdlib.distill.forward import predict

    write(tmp_path, "sst2", "dev", "sentence\tlabel\ngreat film\t1\nan entirely forgettable film , sadly\t0\n")
    tok = load_tokenizer("minilm")
    data = load_task("sst2", "dev", tmp_path)
    cols = ["input_ids", "attention_mask", "token_type_ids", "labels"]
    short = encode(data, tok, "sst2").rename_column("label", "labels").with_format("torch", columns=cols)
    batch = pad_collate(0)([short[0], short[1]])
    n0, n1 = len(short[0]["input_ids"]), len(short[1]["input_ids"])
    assert n0 < n1 and batch["input_ids"].shape == (2, n1) and batch["labels"].tolist() == [1, 0]
    assert batch["attention_mask"][0].sum() == n0 and batch["input_ids"][0, n0:].eq(0).all()
    padded = encode(data, tok, "sst2", padding=True).rename_column("label", "labels").with_format("torch",
                                                                                                  columns=cols)
    from transformers import BertConfig

    from tdlib.core.heads import BertMeanPooledForSequenceClassification as MeanPoolingClassifier

    torch.manual_seed(0)
    model = MeanPoolingClassifier(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=2))
    a = predict(model, short, batch_size=2, progress=False)
    b = predict(model, padded, batch_size=2, progress=False)
    assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-5)


def test_constant_predictions_correlate_zero_not_nan():
    out = compute_metrics("stsb", [2.0, 2.0, 2.0], [0.0, 2.5, 5.0])
    assert out == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
