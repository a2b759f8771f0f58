"""The report: the table of medians and ratios, its text and Markdown
forms, the chart, and the files written at the end of a run."""

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess

from common import ROOT, log
from peers import BOUND, PEER_BY_NAME, SUBJECT


def fmt_num(v, digits=None):
    if v is None:
        return "—"
    a = abs(v)
    if digits is None:
        digits = 0 if a >= 100 else 1 if a >= 10 else 2
    return f"{v:,.{digits}f}"



def summary_of(test, r):
    if "error" in r:
        return f"ERROR: {r['error']}"
    e = r.get("errors", 0)
    tail = f"  errors={e}" if e else ""
    if r.get("server_died") is not None:
        tail += f"  (server died: {r['server_died']})"
    if test == "rate":
        return f"{r['conn_per_s']:,.0f} conn/s  p50 {r['p50_us'] / 1000:.2f} ms  p99 {r['p99_us'] / 1000:.2f} ms{tail}"
    if test == "pingpong":
        return f"{r['msg_per_s']:,.0f} msg/s  p50 {r['p50_us']:.0f} µs  p99 {r['p99_us']:.0f} µs  p99.9 {r['p999_us']:.0f} µs{tail}"
    if test.startswith("stream"):
        return f"{r['mb_per_s']:,.1f} MB/s{tail}"
    return (f"{r['established']}/{r['conc']} up in {r['establish_s']:.2f} s, {r['alive_end']} still echoing, "
            f"PSS {r['pss_kb_per_conn']:.1f} KiB/conn, USS {r['uss_kb_per_conn']:.1f} KiB/conn "
            f"({r['procs']} processes){tail}")




# key, label, test, field, better ("up"/"down"), scale, reference ("epoll", "floor" or None)
METRICS = [
    ("rate", "Conn rate, C=50 (conn/s)", "rate", "conn_per_s", "up", 1, "floor"),
    ("rate_p50", "  cycle p50 (ms)", "rate", "p50_us", "down", 1e-3, None),
    ("rate_p99", "  cycle p99 (ms)", "rate", "p99_us", "down", 1e-3, None),
    ("pp_rate", "Ping-pong, C=50 (msg/s)", "pingpong", "msg_per_s", "up", 1, "epoll"),
    ("pp_p50", "  RTT p50 (µs)", "pingpong", "p50_us", "down", 1, "epoll"),
    ("pp_p99", "  RTT p99 (µs)", "pingpong", "p99_us", "down", 1, "epoll"),
    ("pp_p999", "  RTT p99.9 (µs)", "pingpong", "p999_us", "down", 1, "epoll"),
    ("st1", "Stream, 1 conn (MB/s)", "stream1", "mb_per_s", "up", 1, "epoll"),
    ("st50", "Stream, 50 conns (MB/s)", "stream50", "mb_per_s", "up", 1, "epoll"),
    ("pss", "Idle PSS/conn @[H] (KiB)", "hold", "pss_kb_per_conn", "down", 1, None),
    ("uss", "Idle USS/conn @[H] (KiB)", "hold", "uss_kb_per_conn", "down", 1, None),
    ("pte", "  page tables/conn (KiB)", "hold", "pte_kb_per_conn", "down", 1, None),
    ("est", "Establish [H] conns (s)", "hold", "establish_s", "down", 1, None),
    ("s_alive", "Scale: [S] held, echoing", "hold10k", "alive_end", "up", 1, None),
    ("s_est", "Scale: establish [S] (s)", "hold10k", "establish_s", "down", 1, None),
    ("s_pss", "Scale: PSS/conn @[S] (KiB)", "hold10k", "pss_kb_per_conn", "down", 1, None),
    ("s_uss", "Scale: USS/conn @[S] (KiB)", "hold10k", "uss_kb_per_conn", "down", 1, None),
]

# key -> (text, check(ratio_to_best, ratio_to_ref, subject_value, prof))
TARGETS = {
    "rate": ("≥1.5× best", lambda rb, rr, v, p: rb >= 1.5),
    "pp_p99": ("≤1.2× epoll", lambda rb, rr, v, p: rr <= 1.2),
    "st1": ("≥0.9× epoll", lambda rb, rr, v, p: rr >= 0.9),
    "st50": ("≥0.9× epoll", lambda rb, rr, v, p: rr >= 0.9),
    "pss": ("≤ every forking peer", lambda rb, rr, v, p: rb <= 1.0),
    "uss": ("≤ every forking peer", lambda rb, rr, v, p: rb <= 1.0),
    "s_alive": ("all, no errors", lambda rb, rr, v, p: v >= p["scale_n"]),
}


# Tests whose figures stop being comparable when some connections failed:
# failed cycles are not counted and cost less than good ones.
ERRORS_DISQUALIFY = {"rate", "pingpong", "stream1", "stream50"}


def had_errors(runs):
    return any("error" in r or r.get("errors", 0) or r.get("server_died") is not None for r in runs)


def median_of(runs, field):
    vals = [r[field] for r in runs if "error" not in r and isinstance(r.get(field), (int, float)) and r[field] >= 0]
    return statistics.median(vals) if vals else None


def peer_cells(results, cols, test, field, scale, scale_peers):
    """One row's figures: (values by peer, formatted cells, any flagged)."""
    vals, cells, flagged = {}, [], False
    for c in cols:
        runs = results.get(c, {}).get(test, [])
        vals[c] = None
        if not runs:
            cells.append("skip" if test == "hold10k" and c not in scale_peers else "—")
            continue
        v = median_of(runs, field)
        vals[c] = v * scale if v is not None else None
        cell = fmt_num(vals[c]) if v is not None else "fail"
        if had_errors(runs):
            cell += "*"
            flagged = True
        cells.append(cell)
    return vals, cells, flagged


def best_forking(results, vals, forking, test, better, excluded):
    """(value, peer) of the best forking peer for a row, or (None, None);
    records in excluded the peers left out for errors."""
    cand = [(vals[c], c) for c in forking if vals.get(c) is not None]
    if test in ERRORS_DISQUALIFY:
        # A server that failed connections or stalled did less than the
        # others for its figure: it cannot be the one to beat.
        clean = [(v, c) for v, c in cand if not had_errors(results.get(c, {}).get(test, []))]
        for v, c in cand:
            if (v, c) not in clean:
                excluded.setdefault(PEER_BY_NAME[c].title, set()).add(test)
        cand = clean
    if not cand:
        return None, None
    return max(cand) if better == "up" else min(cand)


def reference(ref, vals, floor_plain):
    """(value, name) of a row's in-run reference, or (None, "")."""
    if ref == "epoll" and vals.get(BOUND) is not None:
        return vals[BOUND], "epoll"
    if ref == "floor" and floor_plain:
        return floor_plain, f"fork floor {fmt_num(floor_plain)}/s"
    return None, ""


def target_text(key, test, rb, rr, subj, prof, results):
    if key not in TARGETS:
        return ""
    text, check = TARGETS[key]
    needs = rr if key in ("pp_p99", "st1", "st50") else subj if key == "s_alive" else rb
    if needs is None:
        return f"{text}: n/a (not measured)"
    ok = check(rb, rr, subj, prof)
    if key == "s_alive":
        ok = ok and all("error" not in r and not r.get("errors")
                        for r in results.get(SUBJECT, {}).get(test, []))
    return f"{text}: {'met' if ok else 'MISSED'}"


def table_notes(floor_plain, floor_libs, flagged, excluded):
    notes = ["echo-mpserv runs with log_level = \"warning\" (no per-connection log lines) and "
             "max_session_bytes = 1 TiB; see the peer list for every command line."]
    if floor_plain:
        notes.append(f"Fork floor (fork+_exit+waitpid on the server CPU): {fmt_num(floor_plain)}/s for a minimal "
                     f"process, {fmt_num(floor_libs)}/s for one mapping echo-mpserv's shared libraries.")
    if flagged:
        notes.append("* = the load generator counted errors (failed, reset, stalled or timed-out connections, or "
                     "a server that died) in at least one repetition; see raw.jsonl.")
    if excluded:
        notes.append("Not eligible as best forking peer for throughput and latency rows, because of those errors: "
                     + "; ".join(f"{name} ({', '.join(sorted(tests))})" for name, tests in sorted(excluded.items()))
                     + ".")
    return notes


def build_table(results, floors, peers, prof, scale_peers):
    """Returns (header, rows, notes, chart data); cells are formatted text."""
    cols = [p.name for p in peers]
    forking = [p.name for p in peers if p.forking and p.name != SUBJECT]
    floor_plain = median_of(floors.get("fork-floor", []), "forks_per_s")
    floor_libs = median_of(floors.get("fork-floor-libs", []), "forks_per_s")
    header = ["Metric"] + [PEER_BY_NAME[c].title for c in cols] + \
             ["echo-mpserv ÷ best forking peer", "echo-mpserv ÷ reference", "target"]
    rows, chart = [], []
    flagged = False
    excluded = {}
    for key, label, test, field, better, scale, ref in METRICS:
        label = label.replace("[H]", f"{prof['hold_n']:,}").replace("[S]", f"{prof['scale_n']:,}")
        vals, cells, row_flagged = peer_cells(results, cols, test, field, scale, scale_peers)
        flagged = flagged or row_flagged
        best_v, best_c = best_forking(results, vals, forking, test, better, excluded)
        subj = vals.get(SUBJECT)
        rb = subj / best_v if subj is not None and best_v else None
        ref_v, ref_name = reference(ref, vals, floor_plain)
        rr = subj / ref_v if subj is not None and ref_v else None
        rows.append([label] + cells + [
            f"{rb:.2f}× ({PEER_BY_NAME[best_c].title})" if rb is not None else "—",
            f"{rr:.2f}× ({ref_name})" if rr is not None else "—",
            target_text(key, test, rb, rr, subj, prof, results)])
        chart.append((key, label.strip(), better, [(PEER_BY_NAME[c].title, vals[c]) for c in cols]))
    return header, rows, table_notes(floor_plain, floor_libs, flagged, excluded), chart


def render_text(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) if i < len(header) - 3
                         else str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def render_markdown(header, rows):
    def esc(c):
        return str(c).replace("|", "\\|")
    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 4) + [":---", ":---", ":---"]) + "|"]
    for r in rows:
        cells = [esc(c) for c in r]
        cells[0] = cells[0].strip()
        if r[0].startswith("  "):
            cells[0] = "&nbsp;&nbsp;" + cells[0]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_chart(outdir, chart, title):
    """A PNG of the table with gnuplot: one bar panel per headline metric."""
    if not shutil.which("gnuplot"):
        return None, "gnuplot not installed"
    wanted = ["rate", "pp_rate", "pp_p99", "st1", "st50", "pss", "est", "s_est"]
    panels = [c for c in chart if c[0] in wanted and any(v is not None and v > 0 for _, v in c[3])]
    if not panels:
        return None, "nothing to plot"
    dat = os.path.join(outdir, "chart.dat")
    with open(dat, "w") as f:
        for key, label, better, vals in panels:
            f.write(f"# {label}\n")
            for i, (name, v) in enumerate(vals):
                colour = 1 if name == SUBJECT else 3 if name.startswith("epoll") else 2
                f.write(f"\"{name}\" {v if v is not None else 'NaN'} {colour}\n")
            f.write("\n\n")
    gp = os.path.join(outdir, "chart.gp")
    logscale = {"rate", "pp_p99", "est", "s_est"}
    with open(gp, "w") as f:
        f.write("# written by bench/bench.py; redraw with: cd bench/out && gnuplot chart.gp\n")
        f.write("set terminal pngcairo size 1800,900 font ',10'\n" if "pngcairo" in gnuplot_terminals()
                else "set terminal png size 1800,900\n")
        f.write("set output 'chart.png'\n")
        f.write("set style fill solid 0.8 border -1\nset boxwidth 0.7\nset grid ytics\n"
                "set xtics rotate by -35 noenhanced\nunset key\nset linetype 1 lc rgb '#d62728'\n"
                "set linetype 2 lc rgb '#7f7f7f'\nset linetype 3 lc rgb '#1f77b4'\n")
        f.write(f"set multiplot layout 2,4 title \"{title}\" noenhanced\n")
        for i, (key, label, better, vals) in enumerate(panels):
            arrow = "higher is better" if better == "up" else "lower is better"
            f.write(f"set title \"{label}\\n({arrow}{', log scale' if key in logscale else ''})\" noenhanced\n")
            f.write("set logscale y\n" if key in logscale else "unset logscale y\nset yrange [0:*]\n")
            if key in logscale:
                f.write("set yrange [*:*]\n")
            f.write(f"plot 'chart.dat' index {i} using 0:2:3:xtic(1) with boxes lc variable, "
                    f"'' index {i} using 0:2:($2 >= 100 ? sprintf('%.0f', $2) : sprintf('%.3g', $2)) "
                    f"with labels offset 0,0.6 font ',8'\n")
        f.write("unset multiplot\n")
    r = subprocess.run(["gnuplot", "chart.gp"], cwd=outdir, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:]
    return os.path.join(outdir, "chart.png"), ""


def gnuplot_terminals():
    r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return r.stdout + r.stderr


def machine_info(args):
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True).stdout.strip()
        if dirty:
            commit += " (src/ modified)"
    except OSError:
        commit = "?"
    return (f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, Linux {platform.release()}, "
            f"{os.cpu_count()} CPUs ({cpu}), commit {commit}; server on CPU {args.server_cpu}, "
            f"load generator on CPU {args.client_cpu}")



def write_report(outdir, args, prof, results, floors, peers, skipped, scale_peers, elapsed):
    """Prints the table and writes results.md, .txt, .json and the chart."""
    header, rows, notes, chart = build_table(results, floors, peers, prof, scale_peers)
    info = machine_info(args)
    peer_notes = [f"- **{p.title}**: {p.note}" for p in peers]
    peer_notes += [f"- **{p.title}**: skipped: {why}" for p, why in skipped]
    not_scaled = [p.title for p in peers if p.name not in scale_peers]
    if "hold10k" not in (args.tests or "hold10k"):
        not_scaled = []
    text = render_text(header, rows)
    log("\n" + text)
    for n in notes:
        log(n)
    if not_scaled:
        log(f"Scale rows: {', '.join(not_scaled)} not attempted at {prof['scale_n']:,} connections "
            "(see bench/README.md; --scale-peers to try).")
    log(f"Medians of {prof['reps']} repetition(s); {info}; {elapsed / 60:.1f} min.")

    md = [f"<!-- written by bench/run ({'--quick' if args.quick else 'full run'}); do not edit -->",
          f"Medians of {prof['reps']} repetition(s). {info}.", "",
          render_markdown(header, rows), ""]
    md += ["- " + n.replace("* =", "`*` =", 1) for n in notes]
    if not_scaled:
        md.append(f"- Scale rows: {', '.join(not_scaled)} not attempted at {prof['scale_n']:,} connections.")
    md += ["", "Peers:", ""] + peer_notes
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(outdir, "results.txt"), "w") as f:
        f.write(text + "\n" + "\n".join(notes) + "\n" + f"Medians of {prof['reps']} repetition(s); {info}.\n")
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"info": info, "profile": prof, "header": header, "rows": rows, "notes": notes,
                   "results": results, "fork_floor": floors}, f, indent=1, default=str)
    png, err = write_chart(outdir, chart, f"echo-mpserv vs peers: medians of {prof['reps']} repetition(s)")
    rel = os.path.relpath(outdir, ROOT)
    log(f"Wrote {rel}/results.md, results.txt, results.json, raw.jsonl"
        + (f", {os.path.relpath(png, ROOT)}" if png else f" (no chart: {err})"))
