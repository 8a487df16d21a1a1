"""How training, evaluation and scoring call a head: three protocols, declared on the class.

Every head class declares ``kind``, one of:

* ``plain``: ``head(features, valid) -> (B,)`` quality from the image's own features.
* ``full_reference``: ``head(features, valid, ref) -> (B,)``; ``ref`` holds the reference
  image's features in the same layout (SAM-IQA's FR head).
* ``grouped``: trained on groups of images from one dataset, each member predicted from the
  others (``forward_group(features, scores, valid)``); predicts under a prompt of
  image-score pairs embedded once (``forward_prompt(features, scores, valid) -> prompt``,
  ``predict(features, prompt, valid)``) (PromptIQA).

Train, evaluate and score dispatch on ``kind`` through the functions below and never on
a head's type, so a new head of a known kind needs no change outside its own module and
its registry line. A head class also declares ``config_cls`` (its frozen config),
``input_fields(specs, overrides)`` (the config fields the store decides),
``default_loss`` and ``train_defaults`` (its paper's training settings).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from heads.specs import HeadConfigError

PLAIN = "plain"
FULL_REFERENCE = "full_reference"
GROUPED = "grouped"
KINDS = (PLAIN, FULL_REFERENCE, GROUPED)


def kind_of(head: nn.Module | type) -> str:
    """The declared protocol of a head (instance or class)."""
    kind = getattr(head, "kind", None)
    if kind not in KINDS:
        name = head.__name__ if isinstance(head, type) else type(head).__name__
        raise HeadConfigError(f"head {name} declares kind {kind!r}; expected one of {KINDS}")
    return str(kind)


def needs_ref(head: nn.Module | type) -> bool:
    """True for full-reference heads (they read the reference image's features)."""
    return kind_of(head) == FULL_REFERENCE


def is_grouped(head: nn.Module | type) -> bool:
    """True for heads trained in groups and predicting under a prompt (PromptIQA)."""
    return kind_of(head) == GROUPED


def predict(
    head: nn.Module,
    features: dict[str, Tensor],
    valid: Tensor | None = None,
    ref: dict[str, Tensor] | None = None,
    prompt: Tensor | None = None,
) -> Tensor:
    """Quality (B,) of a batch, whatever the head's protocol.

    Raises:
        HeadConfigError: a full-reference head without ``ref``, or a grouped head without
            ``prompt``.
    """
    kind = kind_of(head)
    if kind == GROUPED:
        if prompt is None:
            raise HeadConfigError(f"{type(head).__name__} predicts under a prompt; none given")
        out: Tensor = head.predict(features, prompt, valid)  # type: ignore[operator]
        return out
    if kind == FULL_REFERENCE:
        if ref is None:
            raise HeadConfigError(f"{type(head).__name__} is full-reference: give ref features")
        return head(features, valid, ref)
    return head(features, valid)


def embed_prompt(
    head: nn.Module, features: dict[str, Tensor], scores: Tensor, valid: Tensor | None
) -> Tensor:
    """A grouped head's prompt (1, n, dim) from n image-score pairs."""
    if not is_grouped(head):
        raise HeadConfigError(f"{type(head).__name__} takes no prompt")
    prompt: Tensor = head.forward_prompt(features, scores, valid)  # type: ignore[operator]
    return prompt


def group_forward(head: nn.Module, features: dict[str, Tensor], scores: Tensor,
                  valid: Tensor | None) -> Tensor:
    """A grouped head's training pass over one group (each member prompted by the rest)."""
    out: Tensor = head.forward_group(features, scores, valid)  # type: ignore[operator]
    return out


def describe(head: nn.Module | type) -> dict[str, Any]:
    """What a checkpoint and ``iqa-score`` say of a head: its kind and whether it needs refs."""
    kind = kind_of(head)
    return {"kind": kind, "needs_ref": kind == FULL_REFERENCE, "prompted": kind == GROUPED}
