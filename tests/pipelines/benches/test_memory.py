"""The images bench's marginal figure: growth per 1k images between the smallest and the largest size."""

from __future__ import annotations

from pipelines.benches.memory import ROOT, marginal


def test_marginal_is_the_slope_between_smallest_and_largest_size_per_format():
    runs = [{"format": "json", "images": n, "driver_uss_mib": 700 + 2 * n, "workers_pss_mib": 900.0}
            for n in (400, 100, 200)]
    runs.append({"format": "parquet", "images": 100, "driver_uss_mib": 800.0, "workers_pss_mib": 1000.0})
    runs.append({"format": "parquet", "images": 300, "driver_uss_mib": 900.0, "workers_pss_mib": 1100.0})
    assert marginal(runs) == {"json": {"driver_uss_mib": 2000.0, "workers_pss_mib": 0.0},
                              "parquet": {"driver_uss_mib": 500.0, "workers_pss_mib": 500.0}}


def test_the_cli_it_runs_exists():
    assert (ROOT / "pipelines" / "run.py").is_file()
