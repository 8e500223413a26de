#!/usr/bin/env python
"""Prints the Markdown tables of BENCHMARKS.md from a bench_exp1.py JSON file.

Usage: python benchmarks/report_exp1.py [benchmarks/results/exp1_cpu.json]
"""

from __future__ import annotations

import json
import sys


def _e(x):
    return "NaN" if x is None or x != x else f"{x:.1e}"


def main(path="benchmarks/results/exp1_cpu.json"):
    with open(path) as fh:
        r = json.load(fh)
    env, st = r["environment"], r["settings"]
    print(f"- machine: {env['nproc']} cores, {env['cpu_model']}; {env['platform']}")
    print(f"- python {env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, ott-jax {env['ott_jax']}, "
          f"POT {env['pot']}, numpy {env['numpy']}, scipy {env['scipy']}")
    blas = ", ".join(f"{b.get('prefix')} {b.get('version')} ({b.get('architecture')}, {b.get('num_threads')} threads)"
                     for b in env["blas_runtime"] if b.get("internal_api") == "openblas")
    print(f"- numpy/scipy BLAS at run time: {blas}; env {env['env']}")
    print(f"- load average at start / end: {[round(x, 2) for x in env['loadavg_at_start']]} / "
          f"{[round(x, 2) for x in env.get('loadavg_at_end', [])]}; other processes' CPU during the run: "
          f"{env.get('background_cpu_s', float('nan')):.0f} CPU-s ({100 * env.get('background_cpu_fraction', float('nan')):.0f}% of the machine)")
    print(f"- jaxdsm timed: {env.get('jaxdsm_source')}")
    print(f"- command: `{r['command']}`; total {r['total_benchmark_s']:.0f} s; R={st['R']}, repeats={st['repeats']}, "
          f"numpy subset={st['numpy_subset_trials_per_temperature']} trials/temperature")
    print()
    print("| contender | W seconds (median) | best | compile s | ratio vs jaxdsm | max abs d mean sigma2 | max abs d mean H | NaN trials |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in r["contenders"]:
        name = c["name"] + (f" *(extrapolated from {c['trials_timed_per_temperature']} trials/T)*" if c["extrapolated"] else "")
        nan = sum(c.get("nan_trials_per_temperature", [0]))
        print(f"| {name} | {c['w_seconds']:.2f} | {c['w_seconds_min']:.2f} | {c['compile_s']:.2f} | "
              f"{c['ratio_vs_jaxdsm']:.2f} | {_e(c['max_abs_dmean_sigma2'])} | {_e(c['max_abs_dmean_entropy'])} | {nan} |")
    print()
    print("| jaxdsm chunk (lax.map batch_size) | rounds | W seconds | small-T branch (3 T) s | other 13 T s | compile s |")
    print("|---:|---:|---:|---:|---:|---:|")
    logt = set(r["log_domain_temperatures"])
    for c in r["jaxdsm_chunk_sweep"]:
        pt = c["per_temperature_s"]
        lg = sum(p for p, t in zip(pt, st["temperatures"]) if t in logt)
        print(f"| {c['chunk']} | {c['rounds']} | {c['w_seconds']:.2f} | {lg:.2f} | {sum(pt) - lg:.2f} | {c['compile_s']:.2f} |")
    print()
    print("| split of W | small-T branch (3 T) s | other 13 T s |")
    print("|---|---:|---:|")
    for name, v in r["time_split_by_branch"].items():
        print(f"| {name} | {v['log_domain_temperatures_s']:.2f} | {v['scaling_temperatures_s']:.2f} |")
    print()
    for key in ("targets", "targets_plain_auto_no_spread_bound"):
        for role, t in r[key].items():
            print(f"- {key} {role}: need {t['required_speedup']}x, got {t['speedup']:.2f}x -> {'met' if t['met'] else 'NOT met'}")
    print()
    print("semantics:", json.dumps(r["semantics"], indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
