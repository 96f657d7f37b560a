"""Two-channel input with one speaker per channel (a lapel mic each, a phone line + room mic).

Then who spoke is a matter of which channel carried the energy, and no embedding is needed.
Pure functions of numpy arrays: the caller passes (n, 2) float audio at 16 kHz.
"""

from __future__ import annotations

import numpy as np

FRAME = 480
"""30 ms frames at 16 kHz."""


def channel_levels(stereo: np.ndarray) -> np.ndarray:
    """(frames, channels) RMS level in dBFS per 30 ms frame."""
    stereo = np.asarray(stereo, dtype=np.float64)
    if stereo.ndim != 2:
        raise ValueError("expected (samples, channels) audio")
    k = len(stereo) // FRAME
    if k == 0:
        return np.zeros((0, stereo.shape[1]))
    frames = stereo[: k * FRAME].reshape(k, FRAME, stereo.shape[1])
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def dominant_channel(stereo: np.ndarray, *, min_ratio_db: float = 6.0) -> int | None:
    """The channel that carried the speech in this stretch, or None when neither clearly did.

    Only the loud frames count (the top third by summed level: the voice, not the pauses),
    and the winner must be ``min_ratio_db`` louder there on average, so crosstalk picked up
    by the other speaker's microphone does not flip the decision.
    """
    levels = channel_levels(stereo)
    if len(levels) == 0 or levels.shape[1] < 2:
        return None
    total = levels.max(axis=1)
    loud = total >= np.percentile(total, 66)
    if not loud.any() or total[loud].max() < -60:
        return None
    diff = levels[loud, 0] - levels[loud, 1]
    mean = float(np.mean(diff))
    if mean >= min_ratio_db:
        return 0
    if mean <= -min_ratio_db:
        return 1
    return None


def channels_separate(stereo: np.ndarray, *, min_ratio_db: float = 6.0, min_share: float = 0.3) -> bool:
    """Does each channel carry its own speaker? True when, among loud frames, a good share
    are clearly dominated by each channel; False for a mono mix copied into two channels."""
    levels = channel_levels(stereo)
    if len(levels) == 0 or levels.shape[1] != 2:
        return False
    total = levels.max(axis=1)
    loud = total >= max(-55.0, float(np.percentile(total, 50)))
    if loud.sum() < 10:
        return False
    diff = levels[loud, 0] - levels[loud, 1]
    left = float(np.mean(diff >= min_ratio_db))
    right = float(np.mean(diff <= -min_ratio_db))
    return left + right >= min_share * 2 and min(left, right) >= min_share / 3
