"""Audit results as scalars, plots, Markdown/HTML reports, TensorBoard logs, and a gate.

`results` is one audit's dict (its 'kind' is 'dataset', 'images' or 'generations') or a
mapping {section name: audit dict}; with several sections, scalar names get a 'section/'
prefix.

`gate(results, thresholds, baseline=None)`: every threshold is 'max_<metric>' (metric <=
value) or 'min_<metric>' (metric >= value) over `summary_scalars(results)`, e.g.
{"max_mean_abs_loglik_gap": 0.5, "max_near_duplicate_rate": 0.2, "max_classifier_gap": 0.1};
'max_<metric>_increase' compares with `baseline` (the current model's results): candidate
minus baseline <= value. A threshold on a metric the results lack fails (say what to add).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

Block = tuple  # ('h2'|'h3'|'p', text) | ('table', headers, rows) | ('img', name, png, rgb)


def _sections(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  if 'kind' in results:
    return [(str(results.get('name') or results['kind']), results)]
  secs = [(str(k), v) for k, v in results.items() if isinstance(v, Mapping) and 'kind' in v]
  if not secs:
    raise ValueError('results must be an audit dict (with "kind") or a mapping of them; '
                     f'got keys {sorted(results)[:10]}.')
  return secs


# =========================== Scalars and the gate =====================================

def _scalars_of(r: Mapping[str, Any]) -> dict[str, float]:
  s: dict[str, float] = {}
  kind = r['kind']
  if kind == 'dataset':
    d = r['duplicates']
    s.update(num_docs=r['num_docs'], num_words=r['num_words'],
             exact_duplicate_rate=d['exact_duplicate_rate'],
             near_duplicate_rate=d['near_duplicate_rate'],
             mean_words_per_doc=r['length_words'].get('mean', 0.0),
             mean_chars_per_doc=r['length_chars'].get('mean', 0.0),
             stopword_ratio=r['language']['stopword_ratio'],
             en_doc_share=r['language']['doc_language_share'].get('en', 0.0))
    for g, cats in r['terms'].items():
      rates = []
      for c, v in cats.items():
        if c.startswith('_'):
          continue
        s[f'{g}/{c}/per_1k_words'] = v['per_1k_words']
        rates.append(v['per_1k_words'])
        for a, share in r['cooccurrence'][g][c].items():
          if isinstance(share, Mapping):
            s[f'{g}/{c}/{a}_share'] = share['share']
      s[f'{g}/term_rate_ratio'] = (max(rates) / min(rates) if min(rates) > 0
                                   else (math.inf if max(rates) > 0 else 1.0))
  elif kind == 'images':
    s.update(num_examples=r['num_examples'], class_imbalance_ratio=r['class_imbalance_ratio'],
             label_entropy_normalised=r['label_entropy_normalised'])
    if 'image_duplicate_rate' in r:
      s['image_duplicate_rate'] = r['image_duplicate_rate']
      s['duplicate_label_conflicts'] = r['duplicate_label_conflicts']
  elif kind == 'generations':
    s['num_pairs'] = r['num_pairs']
    if 'loglik' in r:
      ll = r['loglik']
      s.update(mean_abs_loglik_gap=ll['mean_abs_gap'], largest_abs_loglik_gap=ll['max_abs_gap'])
      for g, v in ll['per_group'].items():
        s[f'{g}/mean_abs_loglik_gap'] = v['mean_abs_gap']
      if 'prompts_truncated' in ll:
        s['prompts_truncated'] = ll['prompts_truncated']
    if 'classifier' in r:
      c = r['classifier']
      s.update(classifier_gap=c['mean_abs_gap'], largest_classifier_gap=c['max_abs_gap'])
      for g, v in c['per_group'].items():
        s[f'{g}/classifier_gap'] = v['mean_abs_gap']
  else:
    raise ValueError(f"Unknown audit kind {kind!r}; expected 'dataset', 'images' or "
                     "'generations'.")
  return {k: float(v) for k, v in s.items()}


def summary_scalars(results: Mapping[str, Any]) -> dict[str, float]:
  """Flat {metric: value} of one audit (or 'section/metric' of several)."""
  secs = _sections(results)
  if len(secs) == 1:
    return _scalars_of(secs[0][1])
  return {f'{n}/{k}': v for n, r in secs for k, v in _scalars_of(r).items()}


def gate(results: Mapping[str, Any], thresholds: Mapping[str, float],
         baseline: Mapping[str, Any] | None = None) -> tuple[bool, list[str]]:
  """(passed, reasons): reasons lists every failed threshold (empty when passed)."""
  scalars = summary_scalars(results)
  base = summary_scalars(baseline) if baseline is not None else None
  reasons = []
  for key, limit in thresholds.items():
    if key[:4] not in ('max_', 'min_'):
      raise ValueError(f'Gate threshold {key!r} must start with "max_" or "min_" followed by '
                       f'a metric, e.g. "max_mean_abs_loglik_gap"; metrics: {sorted(scalars)}.')
    bound, metric = key[:3], key[4:]
    limit = float(limit)
    if metric not in scalars and metric.endswith('_increase') and metric[:-9] in scalars:
      metric = metric[:-9]
      if base is None or metric not in base:
        reasons.append(f'{key}: needs a baseline audit with {metric!r} (the current model\'s '
                       'results) to compare with.')
        continue
      value, what = scalars[metric] - base[metric], f'{metric} rose by'
      detail = f' ({base[metric]:.4g} -> {scalars[metric]:.4g})'
    elif metric in scalars:
      value, what, detail = scalars[metric], metric, ''
    else:
      reasons.append(f'{key}: the results have no metric {metric!r} (did the audit run that '
                     f'part? e.g. classifier_fn for classifier gaps); metrics: '
                     f'{", ".join(sorted(scalars))}.')
      continue
    if math.isnan(value) or (value > limit if bound == 'max' else value < limit):
      sign = '>' if bound == 'max' else '<'
      reasons.append(f'{what} = {value:.4g}{detail} {sign} {bound} allowed {limit:.4g} ({key}).')
  return not reasons, reasons


# =========================== Plots ====================================================

def _figure(w: float = 6.0, h: float = 3.2):
  from genai import _extras  # pylint: disable=import-outside-toplevel
  with _extras.needs('plots', 'genai.safety.audit_report (plots)'):
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(w, h), dpi=100, layout='constrained')


def _render(fig) -> tuple[bytes, np.ndarray]:
  """(PNG bytes, RGB uint8 [H, W, 3]) of a matplotlib Figure."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  return buf.getvalue(), rgb


def _bars(ax, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> None:
  ax.bar(range(len(values)), values, color='tab:blue')
  ax.set_xticks(range(len(values)), labels, rotation=30 if len(labels) > 4 else 0,
                ha='right' if len(labels) > 4 else 'center', fontsize=8)
  ax.set_title(title, fontsize=10)
  ax.set_ylabel(ylabel)


def _plots(r: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """[(name, Figure)] for one audit."""
  figs = []
  if r['kind'] == 'dataset':
    labels, vals = [], []
    for g, cats in r['terms'].items():
      for c, v in cats.items():
        if not c.startswith('_'):
          labels.append(f'{g}:{c}')
          vals.append(v['per_1k_words'])
    fig = _figure()
    _bars(fig.add_subplot(), labels, vals, 'Identity-term mentions', 'per 1k words')
    figs.append(('term_counts', fig))
    fig = _figure()
    ax = fig.add_subplot()
    lw = r['length_words']
    if lw.get('count'):
      edges = np.asarray(lw['hist_edges'])
      ax.bar(edges[:-1], lw['hist_counts'], width=np.diff(edges), align='edge', color='tab:green')
      ax.set_yscale('log')
    ax.set_title('Words per document', fontsize=10)
    ax.set_xlabel('words')
    ax.set_ylabel('documents')
    figs.append(('length_hist', fig))
    fig = _figure()
    ax = fig.add_subplot()
    cats = [(g, c) for g, cs in r['cooccurrence'].items() for c in cs]
    attrs = list(r['attributes'])
    width = 0.8 / max(len(attrs), 1)
    for j, a in enumerate(attrs):
      ax.bar(np.arange(len(cats)) + j * width,
             [100 * r['cooccurrence'][g][c][a]['share'] for g, c in cats], width, label=a)
    ax.set_xticks(np.arange(len(cats)) + 0.4 - width / 2, [f'{g}:{c}' for g, c in cats],
                  fontsize=8)
    ax.set_ylabel(f'% of mentions (±{r["window"]} words)')
    ax.set_title('Attribute words near identity terms', fontsize=10)
    ax.legend(fontsize=8)
    figs.append(('cooccurrence', fig))
  elif r['kind'] == 'images':
    fig = _figure()
    _bars(fig.add_subplot(), r['class_names'], r['class_counts'], 'Examples per class', 'count')
    figs.append(('class_counts', fig))
  elif r['kind'] == 'generations':
    for part, title, xlabel in (
        ('loglik', 'Log-likelihood gap (prompt a - prompt b)', 'nats'),
        ('classifier', 'Classifier score gap (text a - text b)', 'score')):
      if part in r:
        fig = _figure()
        ax = fig.add_subplot()
        ax.hist(r[part]['gaps'], bins=30, color='tab:red')
        ax.axvline(0, color='k', lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel('pairs')
        figs.append((f'{part}_gap_hist', fig))
    if 'loglik' in r:
      per = r['loglik']['per_continuation']
      fig = _figure()
      ax = fig.add_subplot()
      names = list(per)
      ax.barh(range(len(names)), [per[n]['mean_signed_gap'] for n in names], color='tab:purple')
      ax.set_yticks(range(len(names)), [repr(n) for n in names], fontsize=8)
      ax.axvline(0, color='k', lw=0.8)
      ax.set_xlabel('mean log-lik gap (a - b), nats')
      ax.set_title('Which continuations favour category a', fontsize=10)
      figs.append(('per_continuation_gap', fig))
  return figs


# =========================== Report blocks ============================================

def _f(x: Any) -> str:
  if isinstance(x, float):
    return f'{x:.4g}' if math.isfinite(x) else str(x)
  return str(x)


def _blocks(name: str, r: Mapping[str, Any], multi: bool) -> list[Block]:
  b: list[Block] = [('h2', f'{name} ({r["kind"]} audit)' if multi else f'{r["kind"]} audit')]
  if r['kind'] == 'dataset':
    d = r['duplicates']
    b.append(('p', f'{r["num_docs"]} documents (split: {r["split"]}), {r["num_words"]} words, '
                   f'{r["num_chars"]} characters.'))
    b.append(('h3', 'Identity terms'))
    rows = []
    for g, cats in r['terms'].items():
      for c, v in cats.items():
        if c.startswith('_'):
          continue
        top = sorted(v['terms'].items(), key=lambda kv: -kv[1])[:6]
        rows.append([g, c, v['count'], v['per_1k_words'], v['docs'],
                     ', '.join(f'{t} {n}' for t, n in top if n)])
    b.append(('table', ['group', 'category', 'count', 'per 1k words', 'docs', 'top terms'], rows))
    both = [[g, k, n] for g, cats in r['terms'].items()
            for k, n in cats['_docs_mentioning_both'].items()]
    b.append(('table', ['group', 'categories', 'docs mentioning both'], both))
    b.append(('h3', f'Co-occurrence with attribute words (within {r["window"]} words)'))
    attrs = list(r['attributes'])
    rows = [[g, c] + [f'{100 * v[a]["share"]:.2f}% ({v[a]["mentions_with_attribute"]})'
                      for a in attrs] + [', '.join(f'{w} {n}' for w, n in v['top_attribute_words'][:8])]
            for g, cs in r['cooccurrence'].items() for c, v in cs.items()]
    b.append(('table', ['group', 'category'] + [f'{a} share' for a in attrs] + ['top words'], rows))
    b.append(('h3', 'Duplicates'))
    b.append(('table', ['measure', 'docs', 'rate'],
              [['exact duplicates', d['exact_duplicates'], d['exact_duplicate_rate']],
               ['near duplicates (incl. exact)', d['near_duplicates'], d['near_duplicate_rate']]]))
    b.append(('p', d['method'] + '.'))
    if d['examples']:
      b.append(('table', ['jaccard', 'a', 'b'],
                [[e['jaccard'], e['a'], e['b']] for e in d['examples']]))
    b.append(('h3', 'Lengths'))
    keys = ['mean', 'std', 'min', 'p10', 'p50', 'p90', 'p99', 'max']
    b.append(('table', ['per document'] + keys,
              [[u] + [r[f'length_{u}'].get(k, '') for k in keys] for u in ('chars', 'words')]))
    b.append(('h3', 'Language and script'))
    lang = r['language']
    b.append(('table', ['label', 'docs', 'share'],
              [[k, v, lang['doc_language_share'][k]] for k, v in lang['doc_language'].items()]))
    b.append(('p', 'Letters by script: ' + ', '.join(
        f'{s} {100 * v:.2f}%' for s, v in lang['letter_share_by_script'].items())
              + f'; stopword ratio {lang["stopword_ratio"]:.3f}. ' + lang['method']))
  elif r['kind'] == 'images':
    b.append(('p', f'{r["num_examples"]} examples, {r["num_classes"]} classes; max/min class '
                   f'ratio {_f(r["class_imbalance_ratio"])}, label entropy '
                   f'{r["label_entropy"]:.4f} nats ({r["label_entropy_normalised"]:.3f} of '
                   f'uniform); empty classes: {", ".join(r["empty_classes"]) or "none"}.'))
    b.append(('table', ['class', 'count', 'share'],
              [[n, c, s] for n, c, s in zip(r['class_names'], r['class_counts'], r['class_share'])]))
    if 'image_duplicates' in r:
      b.append(('p', f'Exact duplicate images: {r["image_duplicates"]} '
                     f'({100 * r["image_duplicate_rate"]:.2f}%), of which '
                     f'{r["duplicate_label_conflicts"]} carry a different label.'))
  elif r['kind'] == 'generations':
    b.append(('p', f'{r["num_pairs"]} counterfactual prompt pairs x {len(r["continuations"])} '
                   'continuations. gap = score under prompt a - score under prompt b.'))
    if 'loglik' in r:
      ll = r['loglik']
      b.append(('h3', 'LM log-likelihood of the continuation'))
      b.append(('p', f'mean |gap| {ll["mean_abs_gap"]:.4f} nats, largest |gap| '
                     f'{ll["max_abs_gap"]:.4f}, mean signed gap {ll["mean_signed_gap"]:.4f}'
                     + (f'; {ll["prompts_truncated"]} prompts truncated to fit the context'
                        if ll.get('prompts_truncated') else '') + '.'))
      for field, label in (('per_category_pair', 'category pair'),
                           ('per_continuation', 'continuation')):
        b.append(('table', [label, 'mean |gap|', 'mean signed gap', 'max |gap|', 'n'],
                  [[repr(k) if field == 'per_continuation' else k, v['mean_abs_gap'],
                    v['mean_signed_gap'], v['max_abs_gap'], v['n']] for k, v in ll[field].items()]))
      b.append(('table', ['prompt a', 'prompt b', 'continuation', 'loglik a', 'loglik b', 'gap'],
                [[e['prompt_a'], e['prompt_b'], repr(e['continuation']), e['loglik_a'],
                  e['loglik_b'], e['gap']] for e in ll['largest']]))
    if 'classifier' in r:
      c = r['classifier']
      b.append(('h3', f'Classifier scores ({c["continuations"]} continuations)'))
      b.append(('p', f'mean |gap| {c["mean_abs_gap"]:.4f}, largest {c["max_abs_gap"]:.4f}, '
                     f'mean signed {c["mean_signed_gap"]:.4f}.'))
      b.append(('table', ['text a', 'text b', 'score a', 'score b', 'gap'],
                [[e['text_a'], e['text_b'], e['score_a'], e['score_b'], e['gap']]
                 for e in c['largest']]))
  for n, fig in _plots(r):
    png, rgb = _render(fig)
    b.append(('img', f'{name}_{n}' if multi else n, png, rgb))
  return b


def _all_blocks(results: Mapping[str, Any]) -> list[Block]:
  secs = _sections(results)
  return [blk for n, r in secs for blk in _blocks(n, r, len(secs) > 1)]


def _md_cell(x: Any) -> str:
  return _f(x).replace('|', '\\|').replace('\n', ' / ')


def _markdown(title: str, blocks: list[Block], gate_result=None) -> str:
  out = [f'# {title}', '']
  if gate_result is not None:
    passed, reasons = gate_result
    out += [f'**Gate: {"PASSED" if passed else "FAILED"}**', '']
    out += [f'- {r}' for r in reasons] + ([''] if reasons else [])
  for blk in blocks:
    if blk[0] in ('h2', 'h3'):
      out += [('## ' if blk[0] == 'h2' else '### ') + blk[1], '']
    elif blk[0] == 'p':
      out += [blk[1], '']
    elif blk[0] == 'table':
      _, headers, rows = blk
      out.append('| ' + ' | '.join(_md_cell(h) for h in headers) + ' |')
      out.append('|' + '---|' * len(headers))
      out += ['| ' + ' | '.join(_md_cell(x) for x in row) + ' |' for row in rows]
      out.append('')
    elif blk[0] == 'img':
      out += [f'![{blk[1]}]({blk[1]}.png)', '']
  return '\n'.join(out)


def _html(title: str, blocks: list[Block], gate_result=None) -> str:
  e = html.escape
  out = ['<!doctype html><html><head><meta charset="utf-8">', f'<title>{e(title)}</title>',
         '<style>body{font-family:sans-serif;max-width:1000px;margin:auto;padding:1em}'
         'table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;'
         'padding:2px 6px;font-size:13px;vertical-align:top}th{background:#eee}'
         '.fail{color:#b00}.pass{color:#070}</style></head><body>', f'<h1>{e(title)}</h1>']
  if gate_result is not None:
    passed, reasons = gate_result
    out.append(f'<p class="{"pass" if passed else "fail"}"><b>Gate: '
               f'{"PASSED" if passed else "FAILED"}</b></p>')
    if reasons:
      out.append('<ul>' + ''.join(f'<li>{e(r)}</li>' for r in reasons) + '</ul>')
  for blk in blocks:
    if blk[0] in ('h2', 'h3'):
      out.append(f'<{blk[0]}>{e(blk[1])}</{blk[0]}>')
    elif blk[0] == 'p':
      out.append(f'<p>{e(blk[1])}</p>')
    elif blk[0] == 'table':
      _, headers, rows = blk
      out.append('<table><tr>' + ''.join(f'<th>{e(h)}</th>' for h in headers) + '</tr>')
      out += ['<tr>' + ''.join(f'<td>{e(_f(x))}</td>' for x in row) + '</tr>' for row in rows]
      out.append('</table>')
    elif blk[0] == 'img':
      data = base64.b64encode(blk[2]).decode('ascii')
      out.append(f'<p><img alt="{e(blk[1])}" src="data:image/png;base64,{data}"></p>')
  out.append('</body></html>')
  return '\n'.join(out)


def _json_default(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f'{type(x).__name__} is not JSON serialisable')


def write_report(results: Mapping[str, Any], out_dir: str, title: str = 'Bias audit', *,
                 gate_result: tuple[bool, list[str]] | None = None) -> tuple[str, str]:
  """Writes report.md (+ PNG plots beside it), a self-contained report.html (plots embedded
  as base64 PNG) and results.json into `out_dir`; returns (md_path, html_path)."""
  os.makedirs(out_dir, exist_ok=True)
  blocks = _all_blocks(results)
  for blk in blocks:
    if blk[0] == 'img':
      with open(os.path.join(out_dir, f'{blk[1]}.png'), 'wb') as f:
        f.write(blk[2])
  md_path, html_path = os.path.join(out_dir, 'report.md'), os.path.join(out_dir, 'report.html')
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write(_markdown(title, blocks, gate_result))
  with open(html_path, 'w', encoding='utf-8') as f:
    f.write(_html(title, blocks, gate_result))
  with open(os.path.join(out_dir, 'results.json'), 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1, ensure_ascii=False, default=_json_default)
  return md_path, html_path


def log_to_tensorboard(results: Mapping[str, Any], logdir: str, step: int = 0,
                       prefix: str = 'audit') -> None:
  """Summary scalars, the plots (as images) and the Markdown report (as text) under
  '<prefix>/...' in a TensorBoard event file in `logdir`."""
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  blocks = _all_blocks(results)
  writer = metric_writers.create_default_writer(logdir, asynchronous=False)
  try:
    writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in summary_scalars(results).items()})
    images = {f'{prefix}/{b[1]}': b[3][None] for b in blocks if b[0] == 'img'}
    if images:
      writer.write_images(step, images)
    writer.write_texts(step, {f'{prefix}/report': _markdown(prefix, blocks)})
    writer.flush()
  finally:
    writer.close()
