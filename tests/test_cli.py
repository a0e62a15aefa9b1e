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
