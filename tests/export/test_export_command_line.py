"""`python -m genai.export` (genai/export/__main__.py) in the fast tier: flags parsed, main
run through genai.errors, a user error printed as one line. The exports themselves run
through the command line in the slow tier (test_export_images.py::test_command_line,
tests/test_installed_package.py)."""
import subprocess
import sys

from conftest import REPO


def test_not_a_workdir_is_one_line_without_a_traceback(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'genai.export', f'--workdir={tmp_path}',
                      f'--out={tmp_path / "out"}'], cwd=REPO, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 1, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last == (f"error: '{tmp_path}' is not a genai workdir (no config.json); pass the "
                  'folder a training run wrote (python -m experiments.<family> --workdir ...).')
  assert 'Traceback' not in r.stderr and not (tmp_path / 'out').exists()
