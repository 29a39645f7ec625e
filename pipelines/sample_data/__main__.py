"""`python -m pipelines.sample_data`: see `pipelines.sample_data.main`."""

from pipelines.sample_data import main

main()
