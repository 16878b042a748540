#!/usr/bin/env python3
"""The verdict and the chart of a soak run (benches/soak.sh writes the directory it reads).

    python3 benches/soak_report.py --dir target/soak [--svg docs/soak.svg]

Reads samples.csv, events.csv, run.env, the generators' RESULT lines, moat's and the
backend's logs and the /metrics snapshots; prints the figures and one line per check, writes
summary.md beside them and the chart as SVG. Exits 1 if a check failed.

Standard library only.
"""

import argparse
import csv
import html
import math
import os
import re
import sys

# The generators whose every error is a failure; the floods' errors are expected.
LEGIT = ["full", "resume", "rr", "upload", "download", "idle"]
FLOODS = ["slowloris", "garbage"]
# moat's services that only legitimate clients use.
LEGIT_SERVICES = ["mtls", "idle", "upload", "download"]

# RSS: the first sixth of the load is warm-up; the trend compares the last third with the
# third after the warm-up (for 30 minutes: minutes 20-30 against minutes 5-15).
RSS_GROWTH_LIMIT = 0.10


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            env[key] = value
    return env


def read_samples(path):
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            out = {"phase": row["phase"]}
            for key, value in row.items():
                if key == "phase":
                    continue
                out[key] = float(value) if value not in ("", None) else None
            rows.append(out)
    return rows


def read_events(path):
    events = []
    with open(path) as f:
        for row in csv.DictReader(f):
            events.append((float(row["t_s"]), row["event"], row["detail"]))
    return events


def read_result(path):
    """The key=value pairs of a generator's RESULT line, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("RESULT "):
                    pairs = {}
                    for token in line.split()[1:]:
                        key, _, value = token.partition("=")
                        pairs[key] = value
                    return pairs
    except OSError:
        pass
    return None


def read_metrics(path):
    """Prometheus text: a list of (name, labels dict, value)."""
    series = []
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return series
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        series.append((m.group(1), labels, float(m.group(4))))
    return series


def msum(series, name, **want):
    total = 0.0
    for n, labels, value in series:
        if n == name and all(labels.get(k) == v for k, v in want.items()):
            total += value
    return total


def by_label(series, name, label, **want):
    out = {}
    for n, labels, value in series:
        if n == name and all(labels.get(k) == v for k, v in want.items()):
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
    return out


def mib(kib):
    return kib / 1024.0


def num(x):
    """12345678 -> '12,345,678'."""
    return f"{int(round(x)):,}"


def human_bytes(n):
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def file_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Verdict:
    def __init__(self):
        self.rows = []

    def check(self, name, ok, detail):
        self.rows.append((name, bool(ok), detail))

    @property
    def passed(self):
        return all(ok for _, ok, _ in self.rows)


def rss_windows(duration):
    warm = duration / 6.0
    return warm, (warm, duration / 2.0), (2.0 * duration / 3.0, duration)


def analyse(d):
    env = read_env(os.path.join(d, "run.env"))
    samples = read_samples(os.path.join(d, "samples.csv"))
    events = read_events(os.path.join(d, "events.csv"))
    load_at = float(env.get("load_at") or 0.0)
    duration = float(env["duration"])
    for s in samples:
        s["t"] = s["t_s"] - load_at
    gens = env.get("gens", "").split()
    results = {g: read_result(os.path.join(d, f"gen-{g}.out")) for g in gens}
    m_base = read_metrics(os.path.join(d, "metrics-baseline.txt"))
    m_load = read_metrics(os.path.join(d, "metrics-load.txt"))
    m_end = read_metrics(os.path.join(d, "metrics-end.txt"))
    moat_log = file_text(os.path.join(d, "moat.log"))
    backend_log = file_text(os.path.join(d, "backend.log"))

    base = next((s for s in samples if s["phase"] == "baseline"), None)
    load = [s for s in samples if s["phase"] == "load"]
    end = next((s for s in reversed(samples) if s["phase"] == "end"), None)
    v = Verdict()
    fig = {}

    # -- moat's life ------------------------------------------------------------------
    died = env.get("died") == "1"
    answered = sum(1 for s in load if s["alive"] == 1)
    v.check(
        "moat stayed up",
        not died and load and answered == len(load) and end is not None,
        f"{answered} of {len(load)} samples under load answered /metrics"
        + ("; moat DIED" if died else ""),
    )
    panics = [l for l in moat_log.splitlines() if "panick" in l or "SIGSYS" in l]
    v.check(
        "no panic in moat's log",
        not panics,
        "none" if not panics else panics[0][:120],
    )
    v.check(
        "moat exits 0 on SIGTERM",
        env.get("moat_rc") == "0",
        f"exit status {env.get('moat_rc') or '?'}",
    )

    # -- the load generators ----------------------------------------------------------
    errs = []
    ok = True
    for g in LEGIT:
        r = results.get(g)
        rc = env.get(f"rc_{g}", "")
        if r is None or rc != "0":
            ok = False
            log = file_text(os.path.join(d, f"gen-{g}.log")).strip().splitlines()
            errs.append(f"{g}: exit {rc or '?'}, {log[-1] if log else 'no RESULT'}")
            continue
        e = int(r.get("errors", "0"))
        if e:
            ok = False
            errs.append(f"{g}: {e} ({r.get('first_error', '')})")
        else:
            errs.append(f"{g} 0")
    v.check("legitimate clients saw no error", ok, ", ".join(errs))

    idle = results.get("idle") or {}
    want = int(env.get("idle", "0"))
    held, alive = int(idle.get("tunnels", "0")), int(idle.get("alive", "0"))
    v.check(
        "idle tunnels held for the whole run",
        held == want and alive == want,
        f"{alive} of {want} echoed at the end",
    )

    differs = [l for l in backend_log.splitlines() if "differs" in l]
    up = results.get("upload") or {}
    down = results.get("download") or {}
    rr = results.get("rr") or {}
    up_b, down_b, rr_ops = int(up.get("bytes", 0)), int(down.get("bytes", 0)), int(rr.get("ops", 0))
    v.check(
        "every byte came through unchanged",
        not differs and up_b > 0 and down_b > 0 and rr_ops > 0,
        (
            f"upload {human_bytes(up_b)} checked by the sink, download {human_bytes(down_b)} "
            f"checked by the client, {num(rr_ops)} numbered echoes"
        )
        + (f"; backend: {differs[0]}" if differs else ""),
    )

    fl = []
    ok = True
    for g in FLOODS:
        r = results.get(g)
        if r is None or env.get(f"rc_{g}") != "0" or int(r.get("atk_opened", 0)) == 0:
            ok = False
            fl.append(f"{g}: no report")
            continue
        part = f"{g} {num(int(r['atk_opened']))} opened, {num(int(r['atk_cut']))} cut"
        if "atk_uncut" in r:
            part += f", {r['atk_late']} cut late, {r['atk_uncut']} never cut"
            if int(r["atk_uncut"]):
                ok = False
        part += f", {r['atk_errors']} connect errors"
        fl.append(part)
    v.check("floods ran, every slowloris was cut", ok, "; ".join(fl))

    # -- moat's counts ----------------------------------------------------------------
    if m_load:
        failed = sum(
            msum(m_load, "moat_handshake_failures_total", service=s) for s in LEGIT_SERVICES
        )
        ends = {}
        for s in LEGIT_SERVICES:
            for end_kind, n in by_label(m_load, "moat_tunnels_closed_total", "end", service=s).items():
                ends[end_kind] = ends.get(end_kind, 0) + n
        unclean = {k: n for k, n in ends.items() if k != "clean" and n}
        v.check(
            "no legitimate handshake failed, every tunnel ended clean",
            failed == 0 and not unclean,
            f"5 s before the end: {num(failed)} failed handshakes, "
            f"{num(ends.get('clean', 0))} clean ends"
            + (f", others: {unclean}" if unclean else ""),
        )
    else:
        v.check("no legitimate handshake failed, every tunnel ended clean", False, "no snapshot")

    if end is not None and end["tunnels_open"] is not None:
        v.check(
            "tunnels back to 0",
            end["tunnels_open"] == 0 and end["tunnels_opened"] == end["tunnels_closed"],
            f"open {num(end['tunnels_open'])}, opened {num(end['tunnels_opened'])} = closed "
            f"{num(end['tunnels_closed'])}, {env.get('drain_s') or '?'} s after the last "
            "generator exited",
        )
        v.check(
            "relay buffers all returned",
            end["buffers_in_use"] == 0,
            f"in use {num(end['buffers_in_use'])}, spare {num(end['buffers_spare'])}",
        )
    else:
        v.check("tunnels back to 0", False, "no end sample")
        v.check("relay buffers all returned", False, "no end sample")

    base_fds, final_fds = env.get("base_fds", ""), env.get("final_fds", "")
    v.check(
        "descriptors back to the start-up count",
        base_fds != "" and base_fds == final_fds,
        f"{base_fds} at start-up, {final_fds or '?'} at the end",
    )
    if base and end:
        v.check(
            "threads unchanged",
            base["threads"] == end["threads"],
            f"{num(base['threads'])} at start-up, {num(end['threads'] or 0)} at the end",
        )

    sighups = int(env.get("sighups", "0"))
    if end is not None:
        rok, rfail = end["reloads_ok"], end["reloads_failed"]
        v.check(
            "every reload succeeded",
            rok == sighups and rfail == 0 and sighups > 0,
            f"{sighups} SIGHUP, {num(rok or 0)} ok, {num(rfail or 0)} failed",
        )

    # RSS: no upward trend after the warm-up.
    warm, first_w, last_w = rss_windows(duration)
    first = [s["rss_kib"] for s in load if first_w[0] <= s["t"] < first_w[1] and s["rss_kib"]]
    last = [s["rss_kib"] for s in load if last_w[0] <= s["t"] <= last_w[1] and s["rss_kib"]]
    post = [(s["t"], s["rss_kib"]) for s in load if s["t"] >= warm and s["rss_kib"]]
    slope = 0.0
    if len(post) >= 2:
        mt = sum(t for t, _ in post) / len(post)
        mr = sum(r for _, r in post) / len(post)
        den = sum((t - mt) ** 2 for t, _ in post)
        slope = sum((t - mt) * (r - mr) for t, r in post) / den if den else 0.0
    if first and last:
        growth = max(last) / max(first) - 1.0
        v.check(
            "RSS: no upward trend after warm-up",
            growth <= RSS_GROWTH_LIMIT,
            f"peak {mib(max(first)):.1f} MiB in minutes {first_w[0] / 60:.3g}-{first_w[1] / 60:.3g}, "
            f"{mib(max(last)):.1f} MiB in minutes {last_w[0] / 60:.3g}-{last_w[1] / 60:.3g} "
            f"({growth:+.1%}, limit {RSS_GROWTH_LIMIT:+.0%}); fit {slope * 60:+.1f} KiB/min",
        )
    else:
        v.check("RSS: no upward trend", False, "too few samples")

    # -- figures ----------------------------------------------------------------------
    rss_load = [s["rss_kib"] for s in load if s["rss_kib"]]
    fds_load = [s["fds"] for s in load if s["fds"]]
    after_warm = next((s for s in load if s["t"] >= warm and s["rss_kib"]), None)
    last_load = load[-1] if load else None
    fig["rss"] = {
        "start": base["rss_kib"] if base else None,
        "after_warmup": after_warm["rss_kib"] if after_warm else None,
        "peak": max(rss_load) if rss_load else None,
        "end_of_load": last_load["rss_kib"] if last_load else None,
        "after_drain": end["rss_kib"] if end else None,
        "slope_kib_min": slope * 60,
    }
    fig["fds"] = {
        "start": base["fds"] if base else None,
        "peak": max(fds_load) if fds_load else None,
        "end": float(final_fds) if final_fds else None,
    }
    opens = [s["tunnels_open"] for s in load if s["tunnels_open"] is not None]
    fig["tunnels_open_peak"] = max(opens) if opens else None
    fig["tunnels_open_end"] = end["tunnels_open"] if end else None
    if end is not None and base is not None:
        fig["handshakes"] = end["handshakes"] - base["handshakes"]
        fig["resumed"] = end["resumed"] - base["resumed"]
        fig["tunnels"] = end["tunnels_opened"] - base["tunnels_opened"]
        fig["cpu_s"] = end["cpu_s"] - base["cpu_s"]
        fig["to_target"] = end["bytes_to_target"]
        fig["to_client"] = end["bytes_to_client"]
        fig["log_dropped"] = end["log_dropped"]
        fig["threads"] = end["threads"]
    fig["failures"] = by_label(m_end, "moat_handshake_failures_total", "reason")
    fig["failures_flood"] = by_label(m_end, "moat_handshake_failures_total", "reason", service="flood")
    fig["ends"] = by_label(m_end, "moat_tunnels_closed_total", "end")
    fig["refusals"] = by_label(m_end, "moat_refusals_total", "cap")
    fig["per_service"] = by_label(m_end, "moat_tunnels_opened_total", "service")
    fig["hs_per_service"] = by_label(m_end, "moat_handshakes_total", "service")
    fig["results"] = results
    fig["sighups"] = sighups
    fig["sigusr1s"] = int(env.get("sigusr1s", "0"))
    fig["samples"] = len(load)
    stats_lines = [l for l in moat_log.splitlines() if " stats: " in l]
    fig["last_stats"] = stats_lines[-1].split(" stats: ", 1)[1] if stats_lines else ""
    fig["stats_lines"] = len(stats_lines)
    return env, samples, events, v, fig


# -- output ---------------------------------------------------------------------------


def figures_table(env, fig):
    r = fig["rss"]
    f = fig["fds"]
    res = fig["results"]

    def g(name, key, default="0"):
        return (res.get(name) or {}).get(key, default)

    duration = float(env["duration"])
    rows = [
        ("load", f"{duration / 60:.0f} min, {fig['samples']} samples every {env.get('sample_every', '10')} s"),
        (
            "moat RSS",
            f"{mib(r['start'] or 0):.1f} MiB at start-up, {mib(r['after_warmup'] or 0):.1f} MiB after warm-up, "
            f"peak {mib(r['peak'] or 0):.1f} MiB, {mib(r['end_of_load'] or 0):.1f} MiB at the end of the load, "
            f"{mib(r['after_drain'] or 0):.1f} MiB with every tunnel closed "
            f"(fit after warm-up {r['slope_kib_min']:+.1f} KiB/min)",
        ),
        ("descriptors", f"{num(f['start'] or 0)} at start-up, peak {num(f['peak'] or 0)}, {num(f['end'] or 0)} at the end"),
        (
            "tunnels open",
            f"peak {num(fig.get('tunnels_open_peak') or 0)}, {num(fig.get('tunnels_open_end') or 0)} at the end",
        ),
        (
            "tunnels",
            f"{num(fig.get('tunnels', 0))} opened and closed; by service: "
            + ", ".join(f"{k} {num(n)}" for k, n in sorted(fig["per_service"].items())),
        ),
        (
            "handshakes",
            f"{num(fig.get('handshakes', 0))} completed ({num(fig.get('resumed', 0))} resumed), "
            f"{fig.get('handshakes', 0) / duration:.0f}/s on average",
        ),
        (
            "handshake failures",
            ", ".join(f"{k} {num(n)}" for k, n in sorted(fig["failures"].items()) if n) or "none",
        ),
        ("tunnel ends", ", ".join(f"{k} {num(n)}" for k, n in sorted(fig["ends"].items()) if n)),
        ("refusals", ", ".join(f"{k} {num(n)}" for k, n in sorted(fig["refusals"].items())) or "none"),
        (
            "bytes relayed",
            f"{human_bytes(fig.get('to_target', 0))} to the backend, {human_bytes(fig.get('to_client', 0))} to clients",
        ),
        ("moat CPU", f"{fig.get('cpu_s', 0):.0f} s ({fig.get('cpu_s', 0) / duration:.2f} CPUs on average), {num(fig.get('threads') or 0)} threads"),
        ("reloads, SIGUSR1", f"{fig['sighups']} SIGHUP, {fig['sigusr1s']} SIGUSR1 (last stats: {fig['last_stats']})"),
        ("log lines dropped", num(fig.get("log_dropped") or 0)),
        (
            "generators",
            f"full {num(int(g('full', 'ops')))} handshakes; resume {num(int(g('resume', 'ops')))} "
            f"({num(int(g('resume', 'resumed')))} resumed); rr {num(int(g('rr', 'ops')))} requests "
            f"(p99 {g('rr', 'p99_us')} us); upload {human_bytes(int(g('upload', 'bytes')))}; "
            f"download {human_bytes(int(g('download', 'bytes')))}; idle {g('idle', 'alive')}/{g('idle', 'tunnels')} alive; "
            f"slowloris {num(int(g('slowloris', 'atk_opened')))} opened; garbage {num(int(g('garbage', 'atk_opened')))} opened",
        ),
    ]
    return rows


def print_report(env, fig, verdict):
    rows = figures_table(env, fig)
    width = max(len(k) for k, _ in rows)
    print()
    for k, val in rows:
        print(f"  {k:<{width}}  {val}")
    print()
    width = max(len(n) for n, _, _ in verdict.rows)
    for name, ok, detail in verdict.rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    print()
    print("soak: PASS" if verdict.passed else "soak: FAIL")


def write_summary(path, env, fig, verdict):
    lines = ["| figure | value |", "|---|---|"]
    for k, val in figures_table(env, fig):
        lines.append(f"| {k} | {val} |")
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    for name, ok, detail in verdict.rows:
        lines.append(f"| {name} | {'pass' if ok else '**FAIL**'} | {detail} |")
    lines += ["", f"Verdict: {'PASS' if verdict.passed else 'FAIL'}", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def nice_step(span, ticks=4):
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_tick(v):
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def svg_chart(path, env, samples, events, fig):
    duration = float(env["duration"])
    load_at = float(env.get("load_at") or 0.0)
    pts = [s for s in samples if s["alive"] == 1 and s["rss_kib"] is not None]
    # Handshakes per second between consecutive samples.
    rate, rate_res = [], []
    for a, b in zip(pts, pts[1:]):
        dt = b["t"] - a["t"]
        if dt > 0 and a["handshakes"] is not None and b["handshakes"] is not None:
            mid = b["t"]
            rate.append((mid, (b["handshakes"] - a["handshakes"]) / dt))
            rate_res.append((mid, (b["resumed"] - a["resumed"]) / dt))
    panels = [
        ("moat RSS (MiB)", [[(s["t"], mib(s["rss_kib"])) for s in pts]], ["#1f5fa8"], ["VmRSS"]),
        ("open descriptors", [[(s["t"], s["fds"]) for s in pts]], ["#8a4f00"], ["/proc/PID/fd"]),
        ("tunnels open", [[(s["t"], s["tunnels_open"]) for s in pts if s["tunnels_open"] is not None]], ["#2a7a2a"], ["moat_tunnels_open"]),
        ("handshakes/s", [rate, rate_res], ["#7a2a7a", "#d08020"], ["all", "resumed"]),
    ]
    W, left, right = 960, 70, 20
    ph, gap, top = 150, 50, 84
    H = top + len(panels) * (ph + gap) + 20
    x_max = max([duration + 60] + [s["t"] for s in pts])
    x_min = min([0.0] + [s["t"] for s in pts])
    pw = W - left - right

    def X(t):
        return left + (t - x_min) / (x_max - x_min) * pw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
    ]
    title = (
        f"moat soak: {duration / 60:.0f} min mixed load, samples every {env.get('sample_every', '10')} s "
        f"({env.get('nproc', '?')} cores, Linux {env.get('kernel', '?')}, commit {env.get('commit', '?')})"
    )
    out.append(f'<text x="{left}" y="22" font-size="15" font-weight="bold">{html.escape(title)}</text>')
    out.append(
        f'<text x="{left}" y="40" fill="#555">grey ticks: SIGHUP reloads; dashed line: the load stops; '
        "shaded in RSS: warm-up, then the two windows the trend check compares</text>"
    )
    hups = [t - load_at for t, e, _ in events if e == "sighup"]
    warm, first_w, last_w = rss_windows(duration)
    for i, (name, series, colours, legends) in enumerate(panels):
        y0 = top + i * (ph + gap)
        values = [v for ser in series for _, v in ser if v is not None]
        vmax = max(values) if values else 1.0
        vmin = 0.0
        step = nice_step(vmax - vmin)
        vtop = max(step, math.ceil(vmax / step) * step)

        def Y(v):
            return y0 + ph - (v - vmin) / (vtop - vmin) * ph

        out.append(f'<text x="{left}" y="{y0 - 8}" font-weight="bold">{html.escape(name)}</text>')
        lx = left + 10 + 7.5 * len(name)
        for c, lg in zip(colours, legends):
            out.append(f'<rect x="{lx}" y="{y0 - 17}" width="14" height="3" fill="{c}"/>')
            out.append(f'<text x="{lx + 18}" y="{y0 - 12}" fill="#333">{html.escape(lg)}</text>')
            lx += 30 + 7 * len(lg)
        if i == 0:
            for a, b, shade in ((x_min, warm, "#eeeeee"), (first_w[0], first_w[1], "#e3ecf7"), (last_w[0], last_w[1], "#e3ecf7")):
                out.append(
                    f'<rect x="{X(max(a, x_min)):.1f}" y="{y0}" width="{X(b) - X(max(a, x_min)):.1f}" height="{ph}" fill="{shade}"/>'
                )
        out.append(f'<rect x="{left}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        v = vmin
        while v <= vtop + 1e-9:
            y = Y(v)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333">{fmt_tick(v)}</text>')
            v += step
        minute_step = nice_step((x_max - x_min) / 60.0, 10) * 60
        t = 0.0
        while t <= x_max:
            x = X(t)
            out.append(f'<line x1="{x:.1f}" y1="{y0 + ph}" x2="{x:.1f}" y2="{y0 + ph + 4}" stroke="#999"/>')
            out.append(f'<text x="{x:.1f}" y="{y0 + ph + 16}" text-anchor="middle" fill="#333">{t / 60:g}</text>')
            t += minute_step
        for h in hups:
            out.append(f'<line x1="{X(h):.1f}" y1="{y0}" x2="{X(h):.1f}" y2="{y0 + 6}" stroke="#888"/>')
        xe = X(duration)
        out.append(f'<line x1="{xe:.1f}" y1="{y0}" x2="{xe:.1f}" y2="{y0 + ph}" stroke="#c00" stroke-dasharray="4,3"/>')
        for ser, c in zip(series, colours):
            d = " ".join(f"{X(t):.1f},{Y(v):.1f}" for t, v in ser if v is not None)
            if d:
                out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="1.6"/>')
    out.append(
        f'<text x="{left + pw / 2}" y="{H - 6}" text-anchor="middle" fill="#333">minutes since the load started</text>'
    )
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="the directory benches/soak.sh wrote")
    ap.add_argument("--svg", help="write the chart here (default DIR/soak.svg)")
    args = ap.parse_args()
    env, samples, events, verdict, fig = analyse(args.dir)
    svg = args.svg or os.path.join(args.dir, "soak.svg")
    svg_chart(svg, env, samples, events, fig)
    write_summary(os.path.join(args.dir, "summary.md"), env, fig, verdict)
    print_report(env, fig, verdict)
    print(f"soak: chart {svg}, summary {os.path.join(args.dir, 'summary.md')}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
