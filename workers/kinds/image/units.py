"""What a depth search removes in an image model (the kind's error messages name it); its own
module so the light kind class and the task loader share it without importing each other."""

from __future__ import annotations

UNIT_NOUN = "residual block with an identity shortcut (output = input + a branch of the same shape)"
