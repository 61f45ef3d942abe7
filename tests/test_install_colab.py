"""The notebooks' badge and install cell come from one setting (colab/set_location.py), install
with the runtime's JAX kept, and print the devices JAX uses."""
import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / 'colab'))
import set_location  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_notebooks_are_in_step_with_the_one_location_setting():
  assert set_location.sync(set_location.LOCATION, check=True) == [], (
      'python colab/set_location.py')
  assert sorted(set_location.EXTRAS) == set_location.notebooks()


def test_install_cells_keep_jax_and_print_the_devices():
  for name in set_location.notebooks():
    text = (REPO / 'colab' / name).read_text()
    assert 'OWNER' not in text, name
    nb = json.loads(text)
    install = ''.join(next(c for c in nb['cells'] if c['cell_type'] == 'code')['source'])
    assert 'requirements/keep_jax.py' in install and "'-m', 'pip'" not in install
    assert 'jax.devices()' in install


def test_a_location_gives_a_badge_and_a_clone_url(tmp_path):
  nb = json.loads((REPO / 'colab' / '01_quickstart.ipynb').read_text())
  nb = set_location.rewrite(nb, '01_quickstart.ipynb', 'github.com/someone/genai')
  head = ''.join(nb['cells'][0]['source'])
  assert head.startswith('# Quick start')
  assert ('(https://colab.research.google.com/github/someone/genai/blob/main/colab/'
          '01_quickstart.ipynb)') in head
  install = ''.join(nb['cells'][1]['source'])
  assert "GENAI_REPO = 'https://github.com/someone/genai.git'" in install
  # Rewriting is idempotent: the unpublished form comes back unchanged.
  back = set_location.rewrite(nb, '01_quickstart.ipynb', '')
  assert set_location._dump(back) == (REPO / 'colab' / '01_quickstart.ipynb').read_text()  # pylint: disable=protected-access
