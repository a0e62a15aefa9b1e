"""The mean-pooled and cosine pair heads: what they read, how they save and load, and that students inherit them."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from transformers import BertForSequenceClassification, DistilBertConfig

from tdlib.core.errors import ConfigError
from tdlib.core.heads import (
    COSINE_SCALE,
    BertCosinePairForSequenceClassification,
    BertMeanPooledForSequenceClassification,
    head_class,
    pair_inputs,
    pooling_of,
)
from tdlib.core.modeling import compress
from tdlib.core.pretrained import load_model
from tdlib.distill.stages import task_model


@pytest.fixture
def mean_head() -> BertMeanPooledForSequenceClassification:
    torch.manual_seed(0)
    return BertMeanPooledForSequenceClassification(tiny_config(num_labels=3)).eval()


def test_reads_the_masked_token_mean(mean_head, batch):
    out = mean_head.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h, m = out.last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1)
    expected = mean_head.classifier(torch.tanh(mean_head.bert.pooler.dense(mean)))
    torch.testing.assert_close(mean_head(**batch).logits, expected)


def test_padding_does_not_change_the_logits(mean_head, batch):
    """Row 1 has 7 real tokens: the same row cut to those 7 gives the same logits."""
    full = mean_head(**batch).logits[1]
    short = mean_head(input_ids=batch["input_ids"][1:2, :7], attention_mask=batch["attention_mask"][1:2, :7]).logits
    torch.testing.assert_close(full, short[0], atol=1e-5, rtol=1e-5)


def test_differs_from_the_cls_head_with_the_same_weights(mean_head, batch):
    cls = BertForSequenceClassification(mean_head.config).eval()
    cls.load_state_dict(mean_head.state_dict())
    assert not torch.allclose(cls(**batch).logits, mean_head(**batch).logits)


def test_losses_match_the_task_kind(batch):
    torch.manual_seed(0)
    reg = BertMeanPooledForSequenceClassification(tiny_config(num_labels=1)).eval()
    out = reg(**batch, labels=torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1),
                                                                      torch.tensor([0.5, 1.0, 2.0])))


def test_load_model_builds_saves_and_reloads_the_head(tiny_teacher_dir, tmp_path, batch):
    model = load_model(tiny_teacher_dir, num_labels=2, pooling="mean").eval()
    assert isinstance(model, BertMeanPooledForSequenceClassification)
    model.save_pretrained(str(tmp_path))
    again = load_model(tmp_path).eval()  # the saved architecture decides, no pooling argument needed
    assert type(again) is BertMeanPooledForSequenceClassification
    torch.testing.assert_close(again(**batch).logits, model(**batch).logits)
    assert type(load_model(tiny_teacher_dir, num_labels=2)) is BertForSequenceClassification


def test_students_inherit_the_head_and_round_trip_compressed(mean_head, batch, tmp_path):
    student = task_model(compress(mean_head.bert, 4, 16, "san_ffn", seed=0), mean_head)
    assert type(student) is BertMeanPooledForSequenceClassification
    student.save_pretrained(str(tmp_path))
    again = load_model(tmp_path)
    assert type(again) is BertMeanPooledForSequenceClassification
    torch.testing.assert_close(again(**batch).logits, student.eval()(**batch).logits)


def test_the_head_a_model_was_saved_with_is_read_from_its_config(tiny_teacher_dir, mean_head, tmp_path):
    from tdlib.core.pretrained import saved_pooling

    for pooling, labels in (("cosine", 1), ("mean", 2), ("cls", 2)):
        load_model(tiny_teacher_dir, num_labels=labels, pooling=pooling).save_pretrained(str(tmp_path / pooling))
        assert saved_pooling(tmp_path / pooling) == pooling
    assert saved_pooling(tiny_teacher_dir) == "cls"  # a bare encoder: transformers' own head class
    student = task_model(compress(mean_head.bert, 4, 16, "san_ffn", seed=0), mean_head)
    student.save_pretrained(str(tmp_path / "student"))  # a compressed checkpoint keeps its head class
    assert saved_pooling(tmp_path / "student") == "mean"


def test_bad_pooling_and_unsupported_models_are_one_clear_error(tiny_teacher_dir):
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        load_model(tiny_teacher_dir, num_labels=2, pooling="max")
    with pytest.raises(ConfigError, match="implemented for BERT models"):
        head_class("mean", DistilBertConfig().model_type)
    assert head_class("cls", "distilbert") is None


# -- the cosine pair head (STS-B read the way sentence-transformers reads it) ---------------------------------
@pytest.fixture
def cosine_head() -> BertCosinePairForSequenceClassification:
    torch.manual_seed(0)
    return BertCosinePairForSequenceClassification(tiny_config(num_labels=1)).eval()


def _pair(a: torch.Tensor, b: torch.Tensor, pad: int = 0) -> dict:
    """One row ``a b`` (each already ``[CLS] ... [SEP]``) with token types 0/1 and ``pad`` padding tokens."""
    ids = torch.cat([a, b, torch.zeros(pad, dtype=torch.long)])[None]
    types = torch.cat([torch.zeros(len(a)), torch.ones(len(b)), torch.zeros(pad)]).long()[None]
    mask = torch.cat([torch.ones(len(a) + len(b)), torch.zeros(pad)]).long()[None]
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_cosine_head_equals_two_single_sentence_forwards(cosine_head, attn):
    """One joined row gives exactly 5 * cos of the two sentences' mean embeddings, each encoded on its own."""
    cosine_head.config._attn_implementation = attn
    gen = torch.Generator().manual_seed(3)
    a = torch.cat([torch.tensor([2]), torch.randint(5, 120, (6,), generator=gen), torch.tensor([3])])
    b = torch.cat([torch.tensor([2]), torch.randint(5, 120, (9,), generator=gen), torch.tensor([3])])
    with torch.no_grad():
        u = cosine_head.bert(input_ids=a[None]).last_hidden_state.mean(1)
        v = cosine_head.bert(input_ids=b[None]).last_hidden_state.mean(1)
        expected = 5.0 * torch.nn.functional.cosine_similarity(u, v)
        got = cosine_head(**_pair(a, b)).logits[:, 0]
        padded = cosine_head(**_pair(a, b, pad=5)).logits[:, 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, expected, atol=1e-5, rtol=1e-5)


def test_cosine_head_refuses_single_sentences_and_classification(cosine_head, batch):
    with pytest.raises(ConfigError, match="every row needs a second sentence"):
        cosine_head(**batch)
    with pytest.raises(ConfigError, match="num_labels=2"):
        BertCosinePairForSequenceClassification(tiny_config(num_labels=2))


def test_cosine_head_starts_at_the_label_scale_and_round_trips(tiny_teacher_dir, tmp_path):
    """A fresh head (also one from_pretrained fills in) is a*cos+b with a=5, b=0; save/load keeps class and head."""
    model = load_model(tiny_teacher_dir, num_labels=1, pooling="cosine", problem_type="regression").eval()
    assert type(model) is BertCosinePairForSequenceClassification and model.bert.pooler is None
    assert model.classifier.weight.item() == COSINE_SCALE and model.classifier.bias.item() == 0.0
    with torch.no_grad():
        model.classifier.weight.fill_(2.5)
    model.save_pretrained(str(tmp_path))
    again = load_model(tmp_path)
    assert type(again) is BertCosinePairForSequenceClassification
    assert again.classifier.weight.item() == 2.5


def test_compressed_students_inherit_the_cosine_head(cosine_head):
    with torch.no_grad():
        cosine_head.classifier.bias.fill_(0.25)
    student = task_model(compress(cosine_head.bert, 4, 16, "san_ffn", seed=0), cosine_head)
    assert type(student) is BertCosinePairForSequenceClassification
    torch.testing.assert_close(student.classifier.state_dict(), cosine_head.classifier.state_dict())


def test_separate_encoding_gives_each_sentence_its_own_cls(tiny_teacher_dir):
    from datasets import Dataset

    from tdlib.core.pretrained import load_tokenizer
    from tdlib.data.glue import encode

    tok = load_tokenizer(tiny_teacher_dir)
    data = Dataset.from_dict({"text_a": ["w1 w2"], "text_b": ["w3 w4 w5"], "label": [1.0]})
    row = encode(data, tok, "stsb", separate=True)[0]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    a, b = tok("w1 w2")["input_ids"], tok("w3 w4 w5")["input_ids"]
    assert row["input_ids"] == a + b and a[0] == b[0] == cls and a[-1] == b[-1] == sep
    assert row["token_type_ids"] == [0] * len(a) + [1] * len(b)
    padded = encode(data, tok, "stsb", max_length=16, padding=True, separate=True)[0]
    assert len(padded["input_ids"]) == 16 and sum(padded["attention_mask"]) == len(a) + len(b)
    with pytest.raises(ConfigError, match="needs sentence pairs"):
        encode(Dataset.from_dict({"text_a": ["w1"], "text_b": [""], "label": [1]}), tok, "sst2", separate=True)


def test_pooling_per_task_is_validated():
    from tdlib.studies.settings import settings

    s = settings({"tasks": ["cola", "stsb"], "pooling": {"cola": "mean", "stsb": "cosine"}})
    assert (s.pooling_for("cola"), s.pooling_for("stsb")) == ("mean", "cosine")
    with pytest.raises(ConfigError, match=r"names no head for \['cola'\]"):
        settings({"tasks": ["cola", "stsb"], "pooling": {"stsb": "cosine"}})
    with pytest.raises(ConfigError, match="CoLA is not a regression task on pairs"):
        settings({"tasks": ["cola"], "pooling": {"cola": "cosine"}})
    with pytest.raises(ConfigError, match="set it per task"):
        settings({"pooling": "cosine"})


def test_cosine_head_refuses_a_cross_encoder_encoding(cosine_head):
    """``[CLS] a [SEP] b [SEP]`` would silently read sentence b without its [CLS]: one clear error instead."""
    a, b = torch.tensor([2, 7, 8, 3]), torch.tensor([9, 10, 3])
    with pytest.raises(ConfigError, match="separate=True"):
        cosine_head(**_pair(a, b))
    assert pooling_of(cosine_head) == "cosine" and pooling_of(BertForSequenceClassification(tiny_config())) == "cls"


def test_cosine_score_is_fp32_under_bf16_autocast(cosine_head):
    """The encoder may run in bf16; the cosine and its affine map do not (bf16 steps 0.03 near a score of 5)."""
    a = torch.tensor([2, 7, 8, 9, 3])
    b = torch.tensor([2, 10, 11, 3])
    row = _pair(a, b)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = cosine_head(**row).logits
        mask4d, positions = pair_inputs(row["token_type_ids"], row["attention_mask"], False, torch.float32)
        hidden = cosine_head.bert(input_ids=row["input_ids"], attention_mask=mask4d, position_ids=positions,
                                  token_type_ids=torch.zeros_like(row["input_ids"])).last_hidden_state.float()
    u, v = hidden[:, :5].mean(1), hidden[:, 5:].mean(1)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits[:, 0], COSINE_SCALE * torch.nn.functional.cosine_similarity(u, v),
                               atol=1e-6, rtol=1e-6)


def test_head_names_are_what_a_head_adds_to_its_encoder(cosine_head, tiny_bert):
    """The cosine head has no pooler: its head is the scale and offset alone; a bare encoder has no head."""
    from tdlib.core.heads import head_names

    assert head_names(cosine_head) == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ConfigError, match="no base model"):
        head_names(tiny_bert)
