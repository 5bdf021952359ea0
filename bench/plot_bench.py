"""Plot throughput and latency over time from the JSON of `onecard bench`.

    pip install -e '.[plots]' && python bench/plot_bench.py bench.json docs/img/bench.png

Two rows: the closed-loop saturation phase and the open loop at half that rate; for each second,
answers per second (left) and p50 / p99 / max latency (right). A stall shows as a spike; a
uniform tail does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    data = json.loads(Path(sys.argv[1]).read_text())
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), constrained_layout=True)
    phases = [
        ("saturation_timeline", f"Saturation: {data['terminals']} terminals, closed loop "
                                f"({data['durable_tps']:,.0f} durable purchases/s)"),
        ("open_loop_timeline", f"Open loop at {data['offered_tps']:,.0f}/s "
                               f"(p99 {data['p99_ms']:.1f} ms, p99.9 {data['p999_ms']:.1f} ms)"),
    ]
    for row, (key, title) in enumerate(phases):
        # Whole seconds of the measured window only: the last bucket of a phase is partial.
        timeline = [b for b in data[key] if b["second"] < int(data["seconds"])]
        seconds = [b["second"] for b in timeline]
        left, right = axes[row]
        left.plot(seconds, [b["answered"] for b in timeline], color="tab:blue")
        left.set_title(title, fontsize=10)
        left.set_xlabel("second of the phase")
        left.set_ylabel("answers per second")
        left.set_ylim(0, 1.15 * max(b["answered"] for b in timeline))
        for field, color in (("p50_ms", "tab:green"), ("p99_ms", "tab:orange"),
                             ("max_ms", "tab:red")):
            right.plot(seconds, [b[field] for b in timeline], label=field.replace("_ms", ""),
                       color=color)
        right.set_xlabel("second of the phase")
        right.set_ylabel("latency, ms (from scheduled send time)" if row else "latency, ms")
        right.set_ylim(bottom=0)
        right.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"onecard bench — {data['postgres']}, fsync={data['fsync']}, "
                 f"synchronous_commit={data['synchronous_commit']}, {data['cpus']} cores",
                 fontsize=11)
    Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(sys.argv[2], dpi=90)
    print(f"wrote {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
