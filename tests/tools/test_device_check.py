"""The device check's CPU mode: every section's code at tiny sizes, and its reports."""

import json
import subprocess
import sys

from tests.helpers import training
from tools import device_check


def test_cpu_mode_runs_every_section_and_writes_its_reports(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'tools.device_check', '--out', str(tmp_path),
                           '--cpu'], env=training.subprocess_env(), capture_output=True,
                          text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stdout[-3000:]
  rows = json.loads((tmp_path / 'device_check.json').read_text())
  assert {r['section'] for r in rows} == set(device_check.SECTIONS)
  assert not [r for r in rows if r.get('status') in ('failed', 'out of time')], rows
  golden = [r for r in rows if r['case'].startswith('golden')]
  assert len(golden) == 1 and golden[0]['ok'], golden
  for row in rows:
    if 'images_per_s' in row:
      assert row['images_per_s'] > 0 and row['compile_s'] > 0 and row['planned_gib'] > 0, row
  attention = {r['attention'] for r in rows if r['section'] == 'attention'}
  assert attention == {'einsum', 'xla'}  # CPU's own kernel and XLA's, side by side.
  table = (tmp_path / 'device_check.md').read_text()
  assert table.startswith('| section | case | result |') and len(table.splitlines()) == len(rows) + 2
  assert '-- numerics:' in result.stdout  # Progress as it goes.


def test_a_section_out_of_time_is_reported_and_the_rest_go_on(tmp_path, capsys):
  rows = device_check._run_section('numerics', str(tmp_path), cpu=True, budget_s=0.01)  # pylint: disable=protected-access
  assert rows[-1]['status'] == 'out of time' and 'budget' in rows[-1]['why']
