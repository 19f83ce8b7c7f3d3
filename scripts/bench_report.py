#!/usr/bin/env python3
"""Summarise scripts/bench.sh's measurements (standard library only).

Usage: bench_report.py DIR

Reads DIR/measurements.csv (run,pairing,metric,value) and DIR/meta.txt
(key=value), writes DIR/table.txt, DIR/table.md and DIR/plot.svg, and
prints the text table. Each cell is the median over runs; a throughput's
bracket is the median over runs of its ratio to offload wireguard-go <->
itself in the same run.
"""

import csv
import html
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LABELS = {
    "wgd-wgd": "wgd ↔ wgd",
    "debgo-debgo": "Debian wireguard-go ↔ itself",
    "ogo-ogo": "offload wireguard-go ↔ itself",
    "boringtun-boringtun": "boringtun ↔ itself",
    "wgd-ogo": "wgd (A) ↔ offload wireguard-go (B)",
}
REF = "ogo-ogo"
THROUGHPUT = [("ab", "A→B"), ("ba", "B→A"), ("p4", "4 streams A→B")]


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def load(d):
    # values[pairing][metric][run] = float
    values = defaultdict(lambda: defaultdict(dict))
    order = []
    with open(d / "measurements.csv", newline="") as f:
        for row in csv.DictReader(f):
            p = row["pairing"]
            if p not in order:
                order.append(p)
            v = num(row["value"])
            if v is not None:
                values[p][row["metric"]][int(row["run"])] = v
    meta = {}
    for line in (d / "meta.txt").read_text().splitlines():
        k, _, v = line.partition("=")
        meta[k] = v
    return values, order, meta


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Summary:
    def __init__(self, values, order):
        self.values, self.order = values, order

    def median(self, p, m):
        return med(self.values[p][m].values())

    def ratio(self, p, m):
        ref = self.values.get(REF, {}).get(m, {})
        rs = [v / ref[r] for r, v in self.values[p][m].items() if ref.get(r)]
        return med(rs)

    def failed(self, p):
        return sorted(self.values[p]["failed"])


def fmt(v, digits=0):
    return "-" if v is None else f"{v:.{digits}f}"


def rows(s):
    header = [
        "pairing",
        "A→B Mbit/s",
        "B→A Mbit/s",
        "4 streams Mbit/s",
        "retransmits A→B / B→A / 4",
        "RTT idle / load ms",
        "RSS per daemon A / B MiB",
    ]
    out = []
    for p in s.order:
        cells = [LABELS.get(p, p)]
        for key, _ in THROUGHPUT:
            v = s.median(p, key + "_mbps")
            r = s.ratio(p, key + "_mbps")
            cells.append(fmt(v) + ("" if r is None else f" ({r:.2f}×)"))
        cells.append(" / ".join(fmt(s.median(p, k + "_retr")) for k, _ in THROUGHPUT))
        cells.append(f'{fmt(s.median(p, "rtt_idle_ms"), 2)} / {fmt(s.median(p, "rtt_load_ms"), 2)}')
        a, b = s.median(p, "rss_a_kib"), s.median(p, "rss_b_kib")
        cells.append(f"{fmt(a and a / 1024, 1)} / {fmt(b and b / 1024, 1)}")
        out.append(cells)
    return header, out


def notes(s, meta):
    runs = int(meta.get("runs", "0") or 0)
    lines = [
        f'{meta.get("date", "?")}: `{meta.get("command", "bash scripts/bench.sh")}`; '
        f'{meta.get("cpus", "?")} cores ({meta.get("cpu", "?")}), kernel {meta.get("kernel", "?")}; '
        f'load average (1/5/15 min) {meta.get("load_start", "?")} at the start, {meta.get("load_end", "?")} at the end.',
        f'iperf3 TCP, {meta.get("secs", "?")} s per run after 1 s of warm-up; {runs} runs interleaved '
        "round-robin over the pairings; medians; in brackets the median ratio to offload wireguard-go ↔ itself "
        "in the same run. RTT: median ping A→B through the tunnel, idle and during the A→B single stream. "
        "RSS: peak (VmHWM) summed over all processes of one daemon (wgd: parent + three roles).",
        "Versions: wgd " + meta.get("wgd", "?") + "; Debian " + meta.get("debgo", "?")
        + "; offload " + meta.get("ogo", "absent") + "; " + meta.get("boringtun", "boringtun absent")
        + "; " + meta.get("iperf3", "") + ".",
    ]
    for p in s.order:
        f = s.failed(p)
        if f:
            lines.append(f"{LABELS.get(p, p)}: failed in run(s) {', '.join(map(str, f))}; medians over the rest.")
        loss = s.median(p, "rtt_load_loss_pct")
        if loss:
            lines.append(f"{LABELS.get(p, p)}: {loss:.0f} % of the pings under load lost (median).")
    load = [v for p in s.order for v in s.values[p]["loadavg1"].values()]
    if load:
        lines.append(f"1-minute load average when each pairing started: {min(load):.2f} to {max(load):.2f}.")
    return lines


def text_table(header, body):
    w = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)).rstrip()
    return "\n".join([line(header), "  ".join("-" * x for x in w)] + [line(r) for r in body])


def md_table(header, body):
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


def svg(s, meta):
    """Three panels of horizontal bars (medians) with each run as a dot."""
    colors = ["#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677"]
    panels = [
        ("Throughput, Mbit/s", [(k + "_mbps", lbl, 1) for k, lbl in THROUGHPUT], 0),
        ("Ping RTT through the tunnel, ms", [("rtt_idle_ms", "idle", 1), ("rtt_load_ms", "under load", 1)], 2),
        ("Peak RSS per daemon, MiB", [("rss_a_kib", "A", 1 / 1024), ("rss_b_kib", "B", 1 / 1024)], 1),
    ]
    W, left, right, bar, gap, top = 960, 250, 60, 11, 10, 56
    plot_w = W - left - right
    parts, y = [], top
    for title, series, digits in panels:
        parts.append(f'<text x="10" y="{y}" class="h">{html.escape(title)}</text>')
        y0 = y + 26
        # legend
        lx = left
        for i, (_, lbl, _) in enumerate(series):
            parts.append(f'<rect x="{lx}" y="{y + 8}" width="10" height="10" fill="{colors[i]}"/>')
            parts.append(f'<text x="{lx + 14}" y="{y + 17}">{html.escape(lbl)}</text>')
            lx += 20 + 7 * len(lbl) + 20
        y += 30
        vmax = max(
            [v * f for p in s.order for m, _, f in series for v in s.values[p][m].values()] or [1]
        ) or 1
        scale = plot_w / vmax
        for p in s.order:
            h = len(series) * bar
            parts.append(
                f'<text x="{left - 8}" y="{y + h / 2 + 4}" text-anchor="end">{html.escape(LABELS.get(p, p))}</text>'
            )
            for i, (m, _, f) in enumerate(series):
                by = y + i * bar
                v = s.median(p, m)
                if v is not None:
                    v *= f
                    parts.append(
                        f'<rect x="{left}" y="{by}" width="{max(v * scale, 0.5):.1f}" height="{bar - 2}" fill="{colors[i]}"/>'
                    )
                    # the label right of the bar and of every run's dot
                    end = max([v] + [rv * f for rv in s.values[p][m].values()])
                    parts.append(f'<text x="{left + end * scale + 5:.1f}" y="{by + bar - 3}" class="v">{v:.{digits}f}</text>')
                for rv in s.values[p][m].values():
                    parts.append(
                        f'<circle cx="{left + rv * f * scale:.1f}" cy="{by + (bar - 2) / 2}" r="1.6" fill="#222"/>'
                    )
            y += h + gap
        parts.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y - gap + 2}" stroke="#888"/>')
        y += 28
    note = (
        f'{meta.get("date", "")} · {meta.get("command", "")} · medians of {meta.get("runs", "?")} runs '
        f'(dots: each run) · load average {meta.get("load_start", "?")} → {meta.get("load_end", "?")}'
    )
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" viewBox="0 0 {W} {y}" '
        'font-family="sans-serif" font-size="12">\n'
        "<style>.h{font-weight:bold;font-size:14px}.v{font-size:11px;fill:#333}</style>\n"
        f'<rect width="{W}" height="{y}" fill="white"/>\n'
        f'<text x="10" y="20" class="h">wgd and reference WireGuard implementations: scripts/bench.sh</text>\n'
        f'<text x="10" y="38" class="v">{html.escape(note)}</text>\n'
    )
    return head + "\n".join(parts) + "\n</svg>\n"


def main():
    d = Path(sys.argv[1])
    values, order, meta = load(d)
    s = Summary(values, order)
    header, body = rows(s)
    ns = notes(s, meta)
    txt = text_table(header, body) + "\n\n" + "\n".join(ns) + "\n"
    (d / "table.txt").write_text(txt)
    (d / "table.md").write_text(md_table(header, body) + "\n\n" + "\n\n".join(ns) + "\n")
    (d / "plot.svg").write_text(svg(s, meta))
    print(txt, end="")
    print(f"\nwritten: {d}/measurements.csv, table.txt, table.md, plot.svg")


if __name__ == "__main__":
    main()
