"""Verified multi-step reasoning over any configured model (SPEC §5, RSN-1, RSN-2).

>>> from toolmesh.reasoning import Reasoner, ReasoningConfig
>>> result = await Reasoner(router, ReasoningConfig(verifiers=["arithmetic"])).run("What is 17 * 23?")
"""

from toolmesh.reasoning.engine import Progress, Reasoner
from toolmesh.reasoning.types import (
    DEFAULT_ANSWER_MARKER,
    DEFAULT_STEP_MARKER,
    CoherenceCheck,
    ReasoningConfig,
    ReasoningEvent,
    ReasoningResult,
    Status,
    Step,
    StepState,
    Transition,
    Verdict,
    Verifier,
)

__all__ = [
    "DEFAULT_ANSWER_MARKER", "DEFAULT_STEP_MARKER", "CoherenceCheck", "Progress", "Reasoner", "ReasoningConfig",
    "ReasoningEvent", "ReasoningResult", "Status", "Step", "StepState", "Transition", "Verdict", "Verifier",
]
