"""`pipelines/bench.py method`: run the method check and print its table."""

from __future__ import annotations

import argparse
import logging
import statistics
from typing import Any

from pipelines.experiments.method_check.experiment import CONDITIONS, MethodCheckConfig, run


def format_data(result: dict[str, Any]) -> str:
    """One line per data run: images, synthesized tasks parsed, tasks the judge kept, wall time."""
    lines = []
    for name, d in result["data"].items():
        st = d["stages"]
        synth, judge = st.get("synth", {}), st.get("judge", {})
        lines.append(f"{name}: {st.get('ingest', {}).get('out', 0)} images; synth rows in/out/rejected "
                     f"{synth.get('in', 0)}/{synth.get('out', 0)}/{synth.get('rejected', 0)}; judge tasks "
                     f"in/kept/rejected {judge.get('in', 0)}/{judge.get('out', 0)}/{judge.get('rejected', 0)}; "
                     f"{d['wall_s']:.0f} s")
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of mean +- stdev (min..max) per condition, validation and test."""
    lines = ["| condition | seeds | val score | test score | test slake open | test slake closed | test pmc acc |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for cond, row in result["table"].items():
        runs = [r for r in result["runs"] if r["condition"] == cond]

        def m(get) -> str:
            return f"{statistics.fmean(get(r) for r in runs):.3f}"

        cells = [f"{row[s]['mean']:.3f} ± {row[s]['stdev']:.3f} ({row[s]['min']:.3f}..{row[s]['max']:.3f})"
                 for s in ("val", "test")]
        lines.append(f"| {cond} | {row['test']['n']} | {cells[0]} | {cells[1]} | "
                     f"{m(lambda r: r['test']['slake']['metrics'].get('open_recall', 0))} | "
                     f"{m(lambda r: r['test']['slake']['metrics'].get('closed_accuracy', 0))} | "
                     f"{m(lambda r: r['test']['pmc_vqa']['metrics'].get('accuracy', 0))} |")
    if "question_prior" in result:  # the reference: answers from the question alone, never the image
        q = result["question_prior"]
        lines.append(f"| question prior (no image) | - | - | {q['score']:.3f} | "
                     f"{q['slake']['metrics'].get('open_recall', 0):.3f} | "
                     f"{q['slake']['metrics'].get('closed_accuracy', 0):.3f} | {q['pmc_vqa']['metrics']['accuracy']:.3f} |")
    return "\n".join(lines)


# The fast version (CI): the full run's data and test set, base and filtered only, seed 0, at the full run's
# validation choice of learning rate for filtered (docs/method-check.md); model training is cheap here, the
# vLLM data run is what costs time.
QUICK = dict(conditions=["base", "filtered"], seeds=[0], learning_rates=[1e-4], n_grounding=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pipelines/bench.py method", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="method-check-out", help="output folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    ap.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=None, help="conditions to run")
    ap.add_argument("--learning-rates", type=float, nargs="+", default=None,
                    help="domain learning rates to choose from on the validation split (default 3e-5 1e-4 3e-4 1e-3)")
    ap.add_argument("--quick", action="store_true", help="the small version the test runs")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fields: dict[str, Any] = {"out": a.out, **(QUICK if a.quick else {})}
    if a.seeds:
        fields["seeds"] = a.seeds
    if a.conditions:
        fields["conditions"] = a.conditions
    if a.learning_rates:
        fields["learning_rates"] = a.learning_rates
    result = run(MethodCheckConfig(**fields))
    print(format_table(result))  # CLI output
    print(format_data(result))
    print(f"judge on held-out triplets: {result['judge_check']}")
    if result.get("grounding"):
        g = {k: v for k, v in result["grounding"].items() if k != "examples"}
        print(f"synthesizer on held-out domain captions: {g}")
    if result.get("generalist_general_vqa"):
        v = result["generalist_general_vqa"]
        print(f"generalist on {v['n_questions']} held-out general questions: accuracy {v['accuracy']:.3f}, "
              f"majority prior {v['majority_prior']:.3f}")
    print(f"wall time {result['wall_s']:.0f} s (model building {result['model_build_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
