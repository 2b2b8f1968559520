"""`make demo`: runs examples/quickstart.py twice in a fresh folder and shows
the wall time of each run."""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(folder: str, label: str) -> None:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "quickstart.py")],
        cwd=folder, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    print(f"--- {label} run ({elapsed:.2f} s wall time)")
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(proc.returncode)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="devstash-demo-") as folder:
        print(f"$ python examples/quickstart.py   (in {folder}, twice)")
        run(folder, "first")
        run(folder, "second")
        print("The second run loaded 20 from .devstash_cache/ instead of calling slow_function.")


if __name__ == "__main__":
    main()
