"""A lighter process: a run never imports torchvision (about 190 MB and a second), and start-up
reads each weights file once (both hashes and the tensors from the same bytes).

Nothing here is timed or measured in bytes of memory: benchmarks/bench_memory.py does that.
"""
import subprocess
import sys

from batch_helpers import MAIN, cli_args

# Runs main.py as the command line does, then lists the torchvision modules it imported.
CHILD = """
import atexit, os, runpy, sys
report, main = sys.argv[1], sys.argv[2]
sys.path[0] = os.path.dirname(main)  # as `python main.py` has it
def write_report():
    with open(report, "w", encoding="utf-8") as f:
        f.write("\\n".join(["ran"] + sorted(m for m in sys.modules
                                            if m.split(".")[0] == "torchvision")))
atexit.register(write_report)
sys.argv = sys.argv[2:]
runpy.run_path(main, run_name="__main__")
"""


def test_a_saving_run_never_imports_torchvision(tmp_path, random_checkpoint, sample_video):
    """A saving run writes a run record with torchvision's version: read from its metadata."""
    report, out = tmp_path / "modules.txt", tmp_path / "out"
    args = cli_args(random_checkpoint, str(out), stack_size=13, video_paths=[sample_video],
                    extraction_fps=4)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(report), MAIN, *args],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "s3d" / "sample_s3d.npy").is_file()
    records = list((out / "s3d" / "runs").glob("*.json"))
    assert len(records) == 1 and '"torchvision": "' in records[0].read_text()
    assert report.read_text().splitlines() == ["ran"]
