"""probe_tokens.py on scans whose findings are drawn K times larger (size fractions x K, at most 0.45 of the field
of view): would the 16 image tokens carry findings in a world with more salient ones? Args: MODEL K."""
import runpy, sys
from pipelines.fixtures.sample_data import biomed

k = float(sys.argv.pop(2))
biomed.BIOMED_KINDS = {n: ((min(lo * k, 0.45), min(hi * k, 0.45)), d) for n, ((lo, hi), d) in biomed.BIOMED_KINDS.items()}
runpy.run_path(str(__import__("pathlib").Path(__file__).with_name("probe_tokens.py")), run_name="__main__")
