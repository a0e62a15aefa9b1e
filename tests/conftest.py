"""Shared fixtures: a tiny random BERT (fast) and the embedded MiniLM teacher (real weights)."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# two threads, shared among pytest-xdist's workers (make test runs `-n 2`): a worker that spins up as many threads
# as the host has cores would stall the other one's OpenMP barriers; the processes a test starts inherit the count
THREADS = max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


def tiny_config(**overrides) -> BertConfig:
    kw = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    kw.update(overrides)
    return BertConfig(**kw)


@pytest.fixture
def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(tiny_config()).eval()


@pytest.fixture
def tiny_classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_config(num_labels=3)).eval()


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 120, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="session")
def minilm():
    from tdlib.core.pretrained import load_model

    return load_model("minilm").eval()


# -- a tiny teacher directory, GLUE folder and corpus: the training pipeline end to end in seconds ------
WORDS = [f"w{i}" for i in range(115)]


def tiny_tokenizer(path):
    from transformers import BertTokenizerFast

    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def _sentence(rng, n=8):
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    """A saved tiny BERT encoder with its tokenizer (stands in for 'minilm' in pipeline tests)."""
    path = tmp_path_factory.mktemp("tiny_teacher")
    torch.manual_seed(0)
    BertModel(tiny_config()).save_pretrained(str(path))
    tiny_tokenizer(path).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_glue_dir(tmp_path_factory):
    """RTE (classification) and STS-B (regression) in the classic layout, 48 train / 24 dev rows each."""
    import random

    root = tmp_path_factory.mktemp("glue")
    rng = random.Random(0)
    for split, n in (("train", 48), ("dev", 24)):
        (root / "RTE").mkdir(exist_ok=True)
        rows = ["index\tsentence1\tsentence2\tlabel"]
        rows += [f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.choice(['entailment', 'not_entailment'])}"
                 for i in range(n)]
        (root / "RTE" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        (root / "STS-B").mkdir(exist_ok=True)
        head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
        rows = [head] + [f"{i}\tg\tf\t2012\t{i}\ts\ts\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.uniform(0, 5):.2f}"
                         for i in range(n)]
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A WikiExtractor-format corpus of 30 short articles."""
    import random

    rng = random.Random(1)
    path = tmp_path_factory.mktemp("corpus") / "wiki_00"
    docs = []
    for i in range(30):
        body = "\n\n".join(_sentence(rng, 12) for _ in range(4))
        docs.append(f'<doc id="{i}" url="u" title="t{i}">\nt{i}\n\n{body}\n</doc>')
    path.write_text("\n".join(docs) + "\n")
    return path


# the classic glue_data layout of all eight paper tasks: (folder, header or None, row maker, splits)
def _glue8_rows(rng):
    s, pick = (lambda: _sentence(rng)), rng.choice
    return {
        "CoLA": (None, lambda i: ["src", pick("01"), "", s()], ("train", "dev")),
        "SST-2": (["sentence", "label"], lambda i: [s(), pick("01")], ("train", "dev")),
        "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], lambda i: [pick("01"), "1", "2", s(), s()],
                 ("train", "dev")),
        "STS-B": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                   "score"],
                  lambda i: [str(i), "g", "f", "2012", str(i), "s", "s", s(), s(), f"{rng.uniform(0, 5):.2f}"],
                  ("train", "dev")),
        "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                lambda i: [str(i), "1", "2", s(), s(), pick("01")], ("train", "dev")),
        "MNLI": (["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "gold_label"],
                 lambda i: [str(i), "1", "2", "g", s(), s(), pick(["entailment", "neutral", "contradiction"])],
                 ("train", "dev_matched", "dev_mismatched")),
        "QNLI": (["index", "question", "sentence", "label"], lambda i: [str(i), s(), s(),
                                                                       pick(["entailment", "not_entailment"])],
                 ("train", "dev")),
        "RTE": (["index", "sentence1", "sentence2", "label"], lambda i: [str(i), s(), s(),
                                                                        pick(["entailment", "not_entailment"])],
                ("train", "dev")),
    }


@pytest.fixture(scope="session")
def tiny_glue8_dir(tmp_path_factory):
    """All eight tasks of the paper profile in the classic layout (MNLI with both dev splits): 16 train / 8 dev."""
    import random

    root = tmp_path_factory.mktemp("glue8")
    rng = random.Random(2)
    for folder, (header, row, splits) in _glue8_rows(rng).items():
        (root / folder).mkdir()
        for split in splits:
            n = 16 if split == "train" else 8
            lines = (["\t".join(header)] if header else []) + ["\t".join(row(i)) for i in range(n)]
            (root / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


# the GLUE experiment's settings on the tiny teacher, GLUE folder and corpus: seconds per run
TINY_GLUE = dict(tasks=["rte", "stsb"], students=[[8, 16]], baselines=[[1, 16]], batch_size=8, max_length=16,
                 finetune_steps=4, general_steps=3, general_sequences=24, general_max_length=16, stage1_steps=2,
                 stage2_steps=3, checkpoint_every=2)


@pytest.fixture
def env(monkeypatch, tiny_glue_dir, tiny_corpus, tiny_teacher_dir):
    """Experiment parameters over the tiny fixtures, with GLUE_DIR and TDLIB_CORPUS pointing at them."""
    monkeypatch.setenv("GLUE_DIR", str(tiny_glue_dir))
    monkeypatch.setenv("TDLIB_CORPUS", str(tiny_corpus))
    return {**TINY_GLUE, "teacher": str(tiny_teacher_dir)}


@pytest.fixture
def tiny_profile(tmp_path, monkeypatch):
    """``make(cells, {name: params})``: notebooks of two code cells (a parameters cell ``x = 1``, then ``cells``
    joined) and ``params/t.yaml`` listing them, in scratch folders that :mod:`tdlib.paper.reproduce` reads instead
    of the project's: the reproduce loop on notebooks that take a second to run."""
    import nbformat
    import yaml

    from tdlib.paper import reproduce

    def make(code: str, plan: dict[str, dict]) -> str:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "tdlib", "display_name": "tdlib", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(code)]
        (tmp_path / "nb").mkdir(exist_ok=True)
        for name in plan:
            nbformat.write(nb, tmp_path / "nb" / f"{name}.ipynb")
        (tmp_path / "params").mkdir(exist_ok=True)
        (tmp_path / "params" / "t.yaml").write_text(yaml.safe_dump(plan))
        monkeypatch.setattr(reproduce, "NOTEBOOKS", tmp_path / "nb")
        monkeypatch.setattr(reproduce, "PARAMS", tmp_path / "params")
        return "t"

    return make
