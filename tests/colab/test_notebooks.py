"""Every notebook in colab/ runs top to bottom in its tiny settings (nbclient, a real
kernel); a failing cell fails the test with the cell's error."""
import os

import pytest

from conftest import REPO

NOTEBOOKS = sorted(p.name for p in (REPO / 'colab').glob('*.ipynb'))


def test_there_is_a_notebook_per_main_path():
  assert NOTEBOOKS == ['01_quickstart.ipynb', '02_image_models.ipynb',
                       '03_transfer_learning.ipynb', '04_compression.ipynb',
                       '05_serving.ipynb']


@pytest.mark.slow  # runs each notebook (minutes)
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
  # A notebook that runs a benchmark must never write benchmarks/results/ (the record).
  monkeypatch.setenv('GENAI_BENCH_RESULTS_DIR', str(tmp_path / 'bench_results'))
  import nbformat  # pylint: disable=g-import-not-at-top
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  if name == '03_transfer_learning.ipynb':
    from genai.pretrained import fetch  # pylint: disable=g-import-not-at-top
    if not fetch.smollm2_cache_path().exists():
      pytest.skip('needs SmolLM2: python -m genai.pretrained.fetch smollm2')
  nb = nbformat.read(REPO / 'colab' / name, as_version=4)
  client = NotebookClient(nb, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': str(REPO / 'colab')}})
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  client.execute()
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert not [o for o in cell.get('outputs', []) if o.get('output_type') == 'error']
