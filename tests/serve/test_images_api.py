"""The image route on a real server: GAN, VAE and class-conditional diffusion workdirs."""
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from genai.serve import api
from genai.serve import models
from serving_helpers import load_config, running_server


def _train(family, arg='runlocal', **overrides):
  import importlib  # pylint: disable=g-import-not-at-top
  exp = importlib.import_module(f'experiments.{family}')
  config = load_config(REPO / f'configs/{family}/digits.py', arg)
  config.eval.num_samples = config.eval.get('num_samples', 0) and 4
  config.train.eval_every = config.train.num_steps
  for k, v in overrides.items():
    config[k.split('.')[0]][k.split('.')[1]] = v
  return exp, config


@pytest.fixture(scope='module', params=[pytest.param('gan', marks=pytest.mark.slow), 'vae',
                                        'diffusion'])  # the fast tier's VAE, diffusion runs
def workdir(request, tmp_path_factory):
  family = request.param
  exp, config = _train(family, 'runlocal,cond' if family == 'diffusion' else 'runlocal')
  path = str(tmp_path_factory.mktemp(family))
  exp.train_and_evaluate(config, path)
  return family, path


def decode_png(b64):
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_images_route(workdir):
  family, path = workdir
  model = models.load(path)
  assert isinstance(model, models.ImageModel) and model.family == family
  with running_server(api.make_app(model)) as base, httpx.Client(base_url=base, timeout=120) as c:
    schema = c.get('/openapi.json').json()
    assert '/v1/images/generations' in schema['paths'] and '/v1/completions' not in schema['paths']
    body = {'n': 3, 'seed': 5}
    if family == 'diffusion':
      body.update(label=4, guidance=1.5, steps=3)
    r = c.post('/v1/images/generations', json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out['system_fingerprint'] == model.version and len(out['data']) == 3
    images = np.stack([decode_png(d['b64_json']) for d in out['data']])
    assert images.shape == (3, 8, 8) and images.dtype == np.uint8
    again = c.post('/v1/images/generations', json=body).json()
    assert [d['b64_json'] for d in again['data']] == [d['b64_json'] for d in out['data']]
    other = c.post('/v1/images/generations', json={**body, 'seed': 6}).json()
    assert [d['b64_json'] for d in other['data']] != [d['b64_json'] for d in out['data']]
    # The PNGs hold exactly what the model's sampler makes.
    np.testing.assert_array_equal(images[..., None], model.generate(
        3, seed=5, label=body.get('label', -1), guidance=body.get('guidance'),
        steps=body.get('steps')))
    bad = c.post('/v1/images/generations', json={'n': 17})
    assert bad.status_code == 422 and 'n' in bad.json()['error']['message']
    if family == 'diffusion':
      bad = c.post('/v1/images/generations', json={'label': 10, 'steps': 2})
      assert bad.status_code == 422 and 'not a class of this model' in bad.json()['error']['message']
    else:
      bad = c.post('/v1/images/generations', json={'label': 1})
      assert bad.status_code == 422 and 'unconditional' in bad.json()['error']['message']
    assert 'genai_generated_images_total' in c.get('/metrics').text
