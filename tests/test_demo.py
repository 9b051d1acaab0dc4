"""`see demo --quick`: the main job's code path end to end, offline, at a smoke-test budget."""
from conftest import run_see


def test_demo_quick_prints_the_table(tmp_path):
    r = run_see("demo", "--quick", "--dir", tmp_path / "demo", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for family in ("sentiment", "topic", "antonym", "successor"):
        assert f"adding expert '{family}'" in out
    assert "routed to own expert" in out and "reaches the fallback" in out and "done in" in out
    manifest = (tmp_path / "demo" / "manifest.json").read_text()
    assert manifest.count('"name"') == 4
