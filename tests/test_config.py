import json

import pytest

from retrieval_hl.config import Settings, load_settings, parse_budget, parse_wh
from rhl_common.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("RHL_BUDGET", "RHL_ORDER", "RHL_WINDOW_S", "RHL_CONFIG", "RHL_QDRANT_API_KEY",
                 "QDRANT_API_KEY", "RHL_LIBRARY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


def write_config(tmp_path, **values):
    path = tmp_path / "rhl.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def test_file_below_env_below_flags(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, budget="30s", order="score", window_s=3.0)
    s = load_settings(cfg)
    assert (s.budget, s.order, s.window_s) == ("30s", "score", 3.0)
    monkeypatch.setenv("RHL_BUDGET", "45s")
    monkeypatch.setenv("RHL_WINDOW_S", "1.5")
    s = load_settings(cfg)
    assert (s.budget, s.order, s.window_s) == ("45s", "score", 1.5)  # env over file
    s = load_settings(cfg, budget="2m", order=None, window_s=2.5)
    assert (s.budget, s.order, s.window_s) == ("2m", "score", 2.5)  # flags over env; None = unset
    monkeypatch.setenv("RHL_CONFIG", str(cfg))  # the file may also come from the environment
    monkeypatch.delenv("RHL_BUDGET")
    assert load_settings().budget == "30s"


def test_defaults_and_cache_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    s = Settings()
    assert s.store == str(tmp_path / "retrieval-hl" / "store")
    assert s.library == str(tmp_path / "retrieval-hl" / "library")
    assert (s.budget, s.min_len_s, s.faiss_approx_threshold) == ("auto", 2.0, 50_000)
    monkeypatch.setenv("RHL_LIBRARY", "/srv/lib")
    assert load_settings().library == "/srv/lib"


def test_api_keys_rhl_name_first_and_never_written(monkeypatch):
    monkeypatch.setenv("QDRANT_API_KEY", "conventional")
    assert load_settings().store_options()["api_key"] == "conventional"
    monkeypatch.setenv("RHL_QDRANT_API_KEY", "ours")
    s = load_settings()
    assert s.store_options()["api_key"] == "ours"
    assert "ours" not in s.model_dump_json() and "ours" not in repr(s)
    assert "qdrant_api_key" not in s.model_dump(mode="json")
    assert load_settings(qdrant_api_key="flag").store_options()["api_key"] == "flag"


def test_file_key_below_conventional_env(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, qdrant_api_key="from-file")
    assert load_settings(cfg).store_options()["api_key"] == "from-file"
    monkeypatch.setenv("QDRANT_API_KEY", "from-env")
    assert load_settings(cfg).store_options()["api_key"] == "from-env"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("budget: lots\n", "bad budget .lots."),
        ("no_such_knob: 1\n", "bad setting no_such_knob"),
        ("- a list\n", "must hold a mapping"),
        ("window_s: 9\n", "bad setting window_s"),
    ],
)
def test_bad_config_file(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_settings(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "duration_s", "want"),
    [("60s", 100, 60.0), ("60", 100, 60.0), ("2m", 100, 120.0), ("0.2", 100, 20.0),
     ("none", 100, None), (" 1.5 MIN ", 10, 90.0)],
)
def test_parse_budget(text, duration_s, want):
    assert parse_budget(text, duration_s) == want


def test_parse_budget_rejects_junk():
    with pytest.raises(ConfigError, match="bad budget '-3s'"):
        parse_budget("-3s", 10)


@pytest.mark.parametrize(
    ("text", "want"), [("9:16", (9, 16)), ("16x9", (16, 9)), (" 4 / 3 ", (4, 3)),
                       ("1280X720", (1280, 720))],
)
def test_parse_wh(text, want):
    assert parse_wh(text) == want


@pytest.mark.parametrize("text", ["9:0", "9", "9:16:1", "a:b", "-9:16", "1.5:1", ""])
def test_parse_wh_rejects(text):
    with pytest.raises(ConfigError, match=f"bad ratio {text!r}"):
        parse_wh(text)
    with pytest.raises(ConfigError, match="bad size .* e.g. 1280x720"):
        parse_wh(text, "size")
