"""The README's performance table is generated from committed results, never typed."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_performance_table_matches_committed_results():
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "perf_table.py"), "--check"],
                       capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr


def test_table_rows_point_at_existing_result_files():
  sys.path.insert(0, os.path.join(ROOT, "scripts"))
  try:
    import perf_table  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  body = perf_table.table()
  sources = [line.rsplit("`", 2)[1] for line in body.splitlines()[2:]]
  assert sources, "no benchmark results found"
  for rel in sources:
    assert os.path.exists(os.path.join(ROOT, rel)), rel
