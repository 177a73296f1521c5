"""An embedding model warmed with the defaults and served by sentence-transformers itself.

The model is made with the library (a tiny random BERT, mean pooling, normalisation) and put on
the local hub; the real worker warms it with no dtype and no length given; a fresh process then
loads it the way an embedding server does (``SentenceTransformer`` from the HF cache, offline),
after activating the entry, and encodes texts the warm-up never saw. Everything it compiled must
come from the cache, and the embeddings must equal those of the model loaded from its source
folder without compiling.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.devkit.hub import LocalHub
from tests.devkit.tiny_model import make_tiny_sentence_transformer

from . import runner
from .conftest import COMPILE

EMBED = "tiny/embed"
TEXTS = ["a quick test", "embeddings from the warmed cache", "x"]

SERVE = """
    import json, os, sys
    from pathlib import Path
    from modelwarmup.runtime import activate, cache_stats, compile_for_serving
    from modelwarmup.compilation.settings import CompileSettings
    entry, source, texts = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    activate(entry, published=True)
    manifest = json.loads((entry / "manifest.json").read_text())
    settings = CompileSettings.model_validate(manifest["compile"])
    from sentence_transformers import SentenceTransformer
    reference = SentenceTransformer(source, device="cpu").encode(texts, batch_size=4)
    served = SentenceTransformer({repo!r}, revision=manifest["commit"], device="cpu")
    compile_for_serving(served[0].auto_model, settings)
    together = served.encode(texts, batch_size=4)
    alone = served.encode(texts[:1], batch_size=1)
    print(json.dumps({{
        "stats": cache_stats(),
        "diff": float(abs(together - reference).max()),
        "alone_diff": float(abs(alone[0] - reference[0]).max()),
        "norms": [float((row ** 2).sum() ** 0.5) for row in together],
        "pooling": [type(module).__name__ for module in served],
    }}))
"""


@pytest.mark.slow
def test_an_embedding_model_serves_warm_with_its_pooling(hub: LocalHub, tmp_path: Path) -> None:
    source = make_tiny_sentence_transformer(tmp_path / "embed")
    hub.add_repo(EMBED, source)
    cache = tmp_path / "cache"
    run = runner.warm_cache(
        hub.endpoint,
        cache,
        "--model-path",
        EMBED,
        *COMPILE,
        "--max-batch-size",
        "4",
        "--batch-sizes",
        "1",
        "4",
    )
    assert run.returncode == 0, run
    entry = cache / "compiled" / run.summary["entry_key"]
    manifest = json.loads((entry / "manifest.json").read_text())
    # The checkpoint's float32 and its 128 positions, not bfloat16 and 2048.
    assert (manifest["compile"]["dtype"], manifest["compile"]["max_length"]) == ("float32", 128)
    report = manifest["compile_report"]
    assert report["generation"] == []  # an encoder: nothing to generate
    assert {s["batch_size"] for s in report["shapes"]} == {1, 4}
    snapshot = cache / "hf" / "hub" / "models--tiny--embed" / "snapshots" / manifest["commit"]
    for name in (
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "2_Normalize/config.json",
    ):
        assert (snapshot / name).is_file(), name

    served = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(SERVE.format(repo=EMBED)),
            str(entry),
            str(source),
            json.dumps(TEXTS),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=runner.clean_env({"HF_HOME": str(cache / "hf"), "HF_HUB_OFFLINE": "1"}),
        check=False,
    )
    assert served.returncode == 0, served.stderr[-4000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    assert result["stats"]["fxgraph_cache_miss"] == 0, result["stats"]
    assert result["stats"]["fxgraph_cache_hit"] >= 2, result["stats"]  # a batch of 3, then of 1
    assert result["pooling"] == ["Transformer", "Pooling", "Normalize"]
    assert result["diff"] < 1e-5 and result["alone_diff"] < 1e-5
    assert all(abs(norm - 1) < 1e-5 for norm in result["norms"])  # normalised, as the model says
