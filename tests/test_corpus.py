import pytest
from conftest import tiny_tokenizer

from tdlib.core.errors import DataError
from tdlib.data.corpus import corpus_files, load_corpus, pack, read_documents


def test_wikiextractor_and_plain_documents(tmp_path):
    wiki = tmp_path / "wiki"
    wiki.write_text('<doc id="1" url="u" title="A">\nA\n\nfirst para.\n\nsecond para.\n</doc>\n'
                    '<doc id="2" url="u" title="B">\nB\nonly para.\n</doc>\n')
    plain = tmp_path / "plain.txt"
    plain.write_text("one doc line\nstill one\n\nanother doc\n")
    assert list(read_documents([wiki])) == ["A\nfirst para.\nsecond para.", "B\nonly para."]
    assert list(read_documents([plain])) == ["one doc line\nstill one", "another doc"]
    assert corpus_files(tmp_path) == sorted([wiki, plain])


def test_packing_respects_documents_and_length(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    docs = [" ".join(f"w{i % 100}" for i in range(50)), " ".join(["w7"] * 30)]
    packed = pack(docs, tok, max_length=20, min_tokens=4, progress=False)
    ids = packed["input_ids"]
    assert all(len(seq) == 20 for seq in ids)
    w7 = tok.convert_tokens_to_ids("w7")
    # the first document fills 3 sequences of 18 tokens (50 = 18 + 18 + 14); the second starts fresh
    assert sum(packed["attention_mask"][2]) == 14 + 2
    assert set(ids[3][1:19]) == {w7}, "a sequence must not mix two documents"
    assert pack(docs, tok, max_length=20, max_sequences=2, progress=False)["input_ids"] == ids[:2]


def test_bad_corpora_get_one_clear_error(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="yielded no sequences"):
        load_corpus(tok, empty, progress=False)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(DataError, match="is not text"):
        load_corpus(tok, binary, progress=False)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait ".encode("latin-1") * 20)
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus(tok, latin, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(tok, tmp_path / "missing", progress=False)
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        load_corpus(tok, tmp_path / "void", progress=False)


def test_corpus_from_environment(tmp_path, monkeypatch, tiny_corpus):
    monkeypatch.setenv("TDLIB_CORPUS", str(tiny_corpus))
    data, files = load_corpus(tiny_tokenizer(tmp_path), max_length=32, progress=False)
    assert files == [tiny_corpus] and len(data) > 30 and data.column_names == ["input_ids", "attention_mask"]
