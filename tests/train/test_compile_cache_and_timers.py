"""The persistent compilation cache every command turns on, and the time breakdown line."""
import jax
import pytest

from genai.train import compile_cache
from genai.train import loop


@pytest.fixture
def no_cache_dir():
  before = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', None)
  yield
  jax.config.update('jax_compilation_cache_dir', before)


def test_cache_goes_to_the_user_cache_folder(no_cache_dir, tmp_path, monkeypatch):
  monkeypatch.delenv('GENAI_COMPILATION_CACHE', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compile_cache.enable() == str(tmp_path / 'genai' / 'jax_compilation')
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'genai' / 'jax_compilation')
  assert (tmp_path / 'genai' / 'jax_compilation').is_dir()


def test_cache_can_be_moved_or_turned_off_and_a_user_setting_stays(no_cache_dir, tmp_path,
                                                                     monkeypatch):
  monkeypatch.setenv('GENAI_COMPILATION_CACHE', 'off')
  assert compile_cache.enable() is None and not jax.config.jax_compilation_cache_dir
  monkeypatch.setenv('GENAI_COMPILATION_CACHE', str(tmp_path / 'cc'))
  assert compile_cache.enable() == str(tmp_path / 'cc')
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'mine'))
  assert compile_cache.enable() == str(tmp_path / 'mine')


def test_time_breakdown_adds_up_to_the_total():
  t = loop.RunTimers()
  t.add('compile', 2.0)
  t.add('eval', 1.0)
  t.add('eval', 1.0)
  t.add('checkpoints', 0.5)
  line = t.summary(10.0)
  assert line == ('Time 10.0s: compile 2.0s (20%), steps 5.5s (55%), eval 2.0s (20%), '
                  'checkpoints 0.5s (5%)')
