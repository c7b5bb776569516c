"""Draw every schedule of vaekit.schedules, from the library itself, into _generated/."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from vaekit.schedules import Constant, Cyclical, LinearWarmup, Logistic

OUT = Path(__file__).resolve().parents[1] / "_generated" / "schedules.png"
STEPS = 1000

PANELS = {
    "Constant(0.5)": [Constant(0.5)],
    "LinearWarmup(300)": [LinearWarmup(300)],
    "Logistic(400, 0.02)": [Logistic(400, 0.02)],
    "Cyclical(800, n_cycles=4, ratio=0.5, shape=...)": [
        Cyclical(800, n_cycles=4, shape=shape) for shape in ("linear", "sigmoid", "cosine")
    ],
}


def main() -> None:
    fig, axes = plt.subplots(2, 2, figsize=(9, 5), sharex=True, sharey=True)
    for ax, (title, schedules) in zip(axes.flat, PANELS.items(), strict=True):
        for schedule in schedules:
            label = getattr(schedule, "shape", None)
            ax.plot(range(STEPS), [schedule(t) for t in range(STEPS)], label=label)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if len(schedules) > 1:
            ax.legend(fontsize=8, loc="lower right")
    for ax in axes[1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$\beta$")
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
