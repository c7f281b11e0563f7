"""`make run` works on a machine with no cluster and no network."""

from devstack import local_run


def test_make_run_demo_reaches_a_final_table(tmp_path, capsys):
    assert local_run.main(["--workdir", str(tmp_path / "run"), "--timeout", "180"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("NAMESPACE  KIND"):]
    rows = {line.split()[2] if line.split()[0] == "ai-demo" else line.split()[1]: line for line in table.splitlines()[1:]}
    assert "Ready" in rows["uploaded-model"] and "GGUF" in rows["uploaded-model"]
    assert "Ready" in rows["minilm"] and "Safetensors" in rows["minilm"]
    assert "Ready" in rows["tinyllama"]
    assert "Failed" in rows["bad-url"] and "UnsupportedSource" in rows["bad-url"]
    assert "Failed" in rows["missing-repo"]
    assert "curl -fS --progress-bar" in out
    assert "/data/modelcache/models/uploaded-model" in out and "model.safetensors" in out
