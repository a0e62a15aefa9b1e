import pytest

from tdlib.cli import main


@pytest.fixture
def tiny_dir(tmp_path, tiny_bert):
    path = tmp_path / "tiny"
    tiny_bert.save_pretrained(path)
    return path


def test_compress_then_info(tmp_path, tiny_dir, capsys):
    out = tmp_path / "student"
    assert main(["compress", "--teacher", str(tiny_dir), "--rank-layer", "5", "--rank-dim", "12",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "IV-5-12" in text and "compression ratio" in text and "relative weight error" in text
    assert (out / "model.safetensors").exists() and not (tmp_path / "student.partial").exists()
    assert main(["info", str(out)]) == 0
    assert "Tucker IV-5-12, ops=san_ffn, n=24, D=32" in capsys.readouterr().out


def test_minilm_iv_36_192_ratio(tmp_path, capsys):
    assert main(["compress", "--teacher", "minilm", "--rank-layer", "36", "--rank-dim", "192",
                 "--out", str(tmp_path / "s")]) == 0
    assert "7.19x (encoder weights)" in capsys.readouterr().out


def test_errors_exit_2_with_one_line(tmp_path, tiny_dir, capsys):
    assert main(["compress", "--teacher", str(tiny_dir), "--rank-layer", "5", "--rank-dim", "99",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: rank_dim=99 exceeds the hidden size D (32); use rank_dim <= 32"]
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_ranks_command(capsys):
    assert main(["ranks", "--teacher", "minilm", "--ratio", "48"]) == 0
    assert "MAC ratio" in capsys.readouterr().out


def test_finetune_distill_evaluate(tmp_path, capsys, monkeypatch, tiny_teacher_dir, tiny_glue_dir, tiny_corpus):
    monkeypatch.setenv("GLUE_DIR", str(tiny_glue_dir))
    common = ["--batch-size", "8", "--max-length", "16"]
    assert main(["finetune", "--teacher", str(tiny_teacher_dir), "--task", "rte", "--steps", "3",
                 "--out", str(tmp_path / "ft"), *common]) == 0
    assert "rte dev" in capsys.readouterr().out and (tmp_path / "ft" / "results.json").exists()
    assert main(["distill", "general", "--teacher", str(tiny_teacher_dir), "--layers", "1", "--hidden", "16",
                 "--budget-of", "8x16", "--corpus", str(tiny_corpus), "--steps", "2", "--sequences", "16",
                 "--corpus-max-length", "16", "--out", str(tmp_path / "gen"), *common]) == 0
    assert "dense-1L-16-70: 3,264 encoder weights" in capsys.readouterr().out
    assert main(["distill", "task", "--teacher", str(tmp_path / "ft" / "model"), "--student",
                 str(tmp_path / "gen" / "model"), "--task", "rte", "--stage1-steps", "2", "--stage2-steps", "2",
                 "--out", str(tmp_path / "task"), *common]) == 0
    first = capsys.readouterr().out
    assert "rte dev" in first
    model = tmp_path / "task" / "stage2" / "model"
    assert main(["evaluate", "--model", str(model), "--task", "rte", "--tokenizer", str(tiny_teacher_dir),
                 "--max-length", "16"]) == 0
    assert first.splitlines()[-2].split(":", 1)[1] == capsys.readouterr().out.splitlines()[-1].split(":", 1)[1]
    # without --tokenizer, evaluate reads the model directory's own (the tiny vocabulary, not minilm's)
    assert (model / "tokenizer_config.json").exists()
    assert main(["evaluate", "--model", str(model), "--task", "rte", "--max-length", "16"]) == 0
    assert first.splitlines()[-2].split(":", 1)[1] == capsys.readouterr().out.splitlines()[-1].split(":", 1)[1]
    # the same --out with other settings is refused, and nothing there changes
    assert main(["distill", "task", "--teacher", str(tmp_path / "ft" / "model"), "--student",
                 str(tmp_path / "gen" / "model"), "--task", "rte", "--stage1-steps", "5", "--stage2-steps", "2",
                 "--out", str(tmp_path / "task"), *common]) == 2
    assert "different configuration (differs in steps)" in capsys.readouterr().err
    assert main(["distill", "general", "--out", str(tmp_path / "g2")]) == 2
    assert "needs --rank-layer and --rank-dim" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_teacher_dir), "--task", "rte"]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_stsb_with_the_cosine_head_from_the_command_line(tmp_path, capsys, monkeypatch, tiny_teacher_dir,
                                                         tiny_glue_dir):
    """finetune --pooling cosine, then distill task and evaluate: each encodes STS-B for the head it reads."""
    monkeypatch.setenv("GLUE_DIR", str(tiny_glue_dir))
    common = ["--batch-size", "8", "--max-length", "32"]
    assert main(["finetune", "--teacher", str(tiny_teacher_dir), "--task", "stsb", "--steps", "2", "--pooling",
                 "cosine", "--out", str(tmp_path / "ft"), *common]) == 0
    captured = capsys.readouterr()
    trained = captured.out.splitlines()[-2].split(":", 1)[1]
    teacher = tmp_path / "ft" / "model"
    assert main(["evaluate", "--model", str(teacher), "--task", "stsb", "--max-length", "32"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split(":", 1)[1] == trained
    assert main(["distill", "task", "--teacher", str(teacher), "--student", str(tiny_teacher_dir), "--task", "stsb",
                 "--stage1-steps", "1", "--stage2-steps", "1", "--out", str(tmp_path / "task"), *common]) == 0
    assert "stsb dev" in capsys.readouterr().out
    assert main(["finetune", "--teacher", str(tiny_teacher_dir), "--task", "rte", "--steps", "1", "--pooling",
                 "cosine", "--out", str(tmp_path / "bad"), *common]) == 2
    assert "not a regression task on pairs" in capsys.readouterr().err


def test_export_writes_a_sentence_transformers_directory_with_its_card(tmp_path, tiny_teacher_dir, capsys):
    from sentence_transformers import SentenceTransformer

    student = tmp_path / "student"
    assert main(["compress", "--teacher", str(tiny_teacher_dir), "--rank-layer", "4", "--rank-dim", "8",
                 "--out", str(student)]) == 0
    out = tmp_path / "st"
    assert main(["export", str(student), "--out", str(out)]) == 0
    assert "SentenceTransformer" in capsys.readouterr().out
    assert SentenceTransformer(str(out), device="cpu").encode(["w1 w2 w3"]).shape == (1, 32)
    assert "library_name: sentence-transformers" in (out / "README.md").read_text()
    assert main(["export", str(student), "--out", str(out)]) == 2  # not empty: one error, nothing replaced
    assert "not empty" in capsys.readouterr().err
    onnx_file = tmp_path / "student.onnx"
    assert main(["export", str(student), "--out", str(onnx_file), "--format", "onnx"]) == 0
    assert "InferenceSession" in capsys.readouterr().out and onnx_file.stat().st_size > 0
    assert main(["export", str(student), "--out", str(onnx_file), "--format", "onnx"]) == 2  # exists: one error
    assert "--overwrite" in capsys.readouterr().err
    xml = tmp_path / "ov" / "student.xml"
    xml.parent.mkdir()
    xml.with_suffix(".bin").write_bytes(b"weights of another model")
    assert main(["export", str(student), "--out", str(xml), "--format", "openvino"]) == 2  # its .bin exists
    assert "student.bin exists" in capsys.readouterr().err and not xml.exists()
    xml.with_suffix(".bin").unlink()
    assert main(["export", str(student), "--out", str(xml), "--format", "openvino"]) == 0
    assert "compile_model" in capsys.readouterr().out and sorted(p.name for p in xml.parent.iterdir()) == [
        "student.bin", "student.xml"]
