"""`python -m genai.serve --workdir W` (or --pretrained smollm2|hf:DIR|gguf:FILE).

Loads the model, compiles the decode step for every prompt bucket, then serves with
uvicorn: OpenAPI docs at /docs, routes listed in genai/serve/api.py.
"""
from __future__ import annotations

import logging
import os

from absl import app as absl_app
from absl import flags

from genai import errors

flags.DEFINE_string('workdir', None, 'A trained genai workdir (LM, GAN, VAE or diffusion).')
flags.DEFINE_string('pretrained', None, 'Instead of --workdir: smollm2, hf:DIR or gguf:FILE.')
flags.DEFINE_string('registry', None, 'Instead of --workdir: a model registry root '
                    '(python -m experiments.retrain); serves its current version and follows '
                    'promotions and rollbacks.')
flags.DEFINE_string('name', None, 'Model name in the API (default: the workdir folder name).')
flags.DEFINE_string('host', '127.0.0.1', 'Address to bind (0.0.0.0 for every interface).')
flags.DEFINE_integer('port', 8000, 'Port.')
flags.DEFINE_list('api_keys', None, 'Accepted API keys (comma-separated); also read from '
                  'GENAI_API_KEYS. None: no authentication.')
flags.DEFINE_integer('requests_per_minute', 0, 'Per-key rate limit; 0 = none.')
flags.DEFINE_integer('max_body_bytes', 1 << 20, 'Largest request body.')
flags.DEFINE_integer('max_prompt_tokens', 0, 'Longest prompt; 0 = the model context - 1.')
flags.DEFINE_integer('max_new_tokens', 512, 'Largest max_tokens a request may ask for.')
flags.DEFINE_integer('max_len', 0, '--pretrained only: serve with this shorter context '
                     '(prompt + max_tokens), sizing the KV cache and the prompt buckets '
                     'compiled at start-up; 0 = the model\'s (8,192 for SmolLM2).')
flags.DEFINE_integer('num_slots', 8, 'Sequences decoded together (continuous batching).')
flags.DEFINE_integer('steps_per_tick', 16, 'Tokens decoded per slot per jitted call.')
flags.DEFINE_float('admit_window_ms', 3.0, 'When idle, how long to wait for more requests '
                   'to start together in one batch.')
flags.DEFINE_integer('max_queue', 256, 'Requests waiting beyond this get 503.')
flags.DEFINE_float('reload_interval', 10.0, 'Seconds between checks of --workdir for a newer '
                   'checkpoint, or of --registry for a new current version (hot reload); '
                   '0 = off.')
flags.DEFINE_float('request_timeout', 300.0, 'Seconds before a generation is abandoned (504).')
flags.DEFINE_string('moderation', '', "Output moderation (genai.safety.moderation): 'default' "
                    '(PII redaction) or a JSON config file of rules and an optional '
                    'classifier; flagged outputs are queued for review with --feedback.')
flags.DEFINE_bool('feedback', False, 'Record every generation and accept feedback (the web '
                  'page at /, /v1/feedback*, /v1/review) in --feedback_db.')
flags.DEFINE_string('feedback_db', '', 'SQLAlchemy URL of the feedback store, e.g. '
                    'postgresql+psycopg://user:password@host:5432/feedback shared by replicas; '
                    'also read from GENAI_FEEDBACK_DB (keeps a password out of the process '
                    'list). Default: sqlite in the --registry root or the --workdir '
                    '(feedback.db).')


def build(f) -> tuple:
  """(app, engine or None, reloader or None) from parsed flags."""
  from genai.serve import api  # pylint: disable=import-outside-toplevel
  from genai.serve import limits as limits_lib  # pylint: disable=import-outside-toplevel
  from genai.serve import models  # pylint: disable=import-outside-toplevel
  from genai.serve import reload  # pylint: disable=import-outside-toplevel
  from genai.serve.engine import Engine  # pylint: disable=import-outside-toplevel
  if sum(bool(x) for x in (f.workdir, f.pretrained, f.registry)) != 1:
    raise absl_app.UsageError('Give exactly one of --workdir, --pretrained or --registry.')
  store = None  # a URL first: a bad one is one line before minutes of loading and compiling
  feedback_db = f.feedback_db or os.environ.get('GENAI_FEEDBACK_DB', '')
  if feedback_db:
    from genai.feedback import store as store_lib  # pylint: disable=import-outside-toplevel
    # Lazy: a replica may start before its database; /readyz says 503 until it answers.
    store = store_lib.FeedbackStore(feedback_db, lazy=True)
    try:
      store.ping()
    except store_lib.StoreUnavailable as e:
      logging.warning('%s; serving anyway: /readyz and the routes that need it answer 503 '
                      'until it is back', e)
  version_fn = load_fn = None
  if f.registry:
    version_fn, load_fn = reload.registry_fns(f.registry)
    model = load_fn(f.registry, f.name or os.path.basename(os.path.normpath(f.registry)))
  else:
    source = f.workdir or f.pretrained
    model = models.load(source, name=f.name or (None if f.workdir else f.pretrained),
                        max_len=f.max_len)
  keys = f.api_keys or [k for k in os.environ.get('GENAI_API_KEYS', '').split(',') if k]
  limits = limits_lib.Limits(api_keys=frozenset(keys), max_body_bytes=f.max_body_bytes,
                             max_prompt_tokens=f.max_prompt_tokens,
                             max_new_tokens=f.max_new_tokens,
                             requests_per_minute=f.requests_per_minute)
  engine = None
  if isinstance(model, models.TextModel):
    engine = Engine(model.model, model.params, model.tokenizer, num_slots=f.num_slots,
                    steps_per_tick=f.steps_per_tick, max_queue=f.max_queue,
                    version=model.version, eos_id=model.eos_id,
                    admit_window_s=f.admit_window_ms / 1000)
    logging.info('compiling prefill for buckets %s and the decode tick', engine.buckets)
    engine.warmup()
    engine.start()
  if f.feedback and store is None:  # beside the model, once it is known to load
    from genai.feedback.store import FeedbackStore  # pylint: disable=import-outside-toplevel
    if f.registry or f.workdir:
      store = FeedbackStore.for_workdir(f.registry or f.workdir)
    else:
      raise ValueError('--feedback with --pretrained needs --feedback_db (where to keep it).')
  output_filter = None
  if f.moderation:
    from genai.safety import moderation  # pylint: disable=import-outside-toplevel
    output_filter = (moderation.Moderator() if f.moderation == 'default'
                     else moderation.Moderator.from_config(f.moderation))
  application = api.make_app(model, limits=limits, engine=engine, feedback_store=store,
                             output_filter=output_filter, request_timeout_s=f.request_timeout)
  reloader = None
  if f.registry and f.reload_interval > 0:
    reloader = reload.Reloader(f.registry, application.state.served, f.reload_interval,
                               version_fn, load_fn).start()
  elif f.workdir and f.reload_interval > 0:
    reloader = reload.Reloader(f.workdir, application.state.served, f.reload_interval).start()
  return application, engine, reloader


def main(argv):
  del argv
  from genai import _extras  # pylint: disable=import-outside-toplevel
  _extras.require('serve', 'genai.serve')  # one line naming the extra, before any loading
  if flags.FLAGS.feedback or flags.FLAGS.feedback_db or os.environ.get('GENAI_FEEDBACK_DB'):
    _extras.require('feedback', 'genai.serve --feedback')
  import uvicorn  # pylint: disable=import-outside-toplevel
  application, engine, reloader = build(flags.FLAGS)  # user errors: one line (genai.errors)
  try:
    uvicorn.run(application, host=flags.FLAGS.host, port=flags.FLAGS.port, log_level='info')
  finally:
    if reloader is not None:
      reloader.stop()
    if engine is not None:
      engine.stop()


if __name__ == '__main__':
  errors.run_absl(main)
