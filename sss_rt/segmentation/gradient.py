"""The image gradient the relaxed sparsification's exponent is made from, by the authors' rule
(``imageGradient(image, false, 6)``): Farid and Simoncelli's 13-tap prefilter/derivative pair
(TIP 2004, "Differentiation of discrete multidimensional signals"; the published taps to four
decimals, as the authors use them), applied separably to each colour channel with replicated
borders; the x and y derivatives each reduced to their norm over the channels, and the
magnitude ‖(‖∂x‖, ‖∂y‖)‖ = sqrt(Σ_c ∂x_c² + ∂y_c²).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

#: the 13-tap prefilter (sums to 1.0000)
PREFILTER = np.array(
    [0.0000, 0.0007, 0.0071, 0.0374, 0.1126, 0.2119, 0.2605,
     0.2119, 0.1126, 0.0374, 0.0071, 0.0007, 0.0000]
)  # fmt: skip
#: the 13-tap derivative, as a correlation: positive on a rising ramp
DERIVATIVE = -np.array(
    [0.0001, 0.0019, 0.0142, 0.0509, 0.0963, 0.0878, 0.0000,
     -0.0878, -0.0963, -0.0509, -0.0142, -0.0019, -0.0001]
)  # fmt: skip


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """‖∇I‖ of an H×W×C (or H×W) image in [0, 1]: H×W float64."""
    planes = np.asarray(image, np.float64)
    if planes.ndim == 2:
        planes = planes[..., None]
    total = np.zeros(planes.shape[:2])
    for c in range(planes.shape[2]):
        plane = planes[..., c]
        gx = correlate1d(correlate1d(plane, PREFILTER, 0, mode="nearest"), DERIVATIVE, 1,
                         mode="nearest")  # fmt: skip
        gy = correlate1d(correlate1d(plane, DERIVATIVE, 0, mode="nearest"), PREFILTER, 1,
                         mode="nearest")  # fmt: skip
        total += gx * gx + gy * gy
    return np.sqrt(total)
