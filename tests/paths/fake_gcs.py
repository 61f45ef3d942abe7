"""An in-memory Google Cloud Storage server on loopback: the part of the JSON API that
TensorStore's `gcs` driver (orbax's arrays) and fsspec's gcsfs (etils epath) use, with
GCS's semantics where they matter for a checkpoint: generations, the `ifGenerationMatch` /
`ifGenerationNotMatch` preconditions (412 / 304), ranged reads, resumable uploads, listing
with prefix, delimiter and pages, copy/rewrite and delete. Objects are whole and atomic:
a write is visible only once complete.

  python tests/paths/fake_gcs.py --port 8123 --bucket b    # serves until killed

Written for the tests of genai's path layer: offline, no Docker, no Java.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import re
import threading
import time
import urllib.parse

_lock = threading.Lock()
_objects: dict[tuple[str, str], dict] = {}  # (bucket, name) -> {'data', 'generation', ...}
_uploads: dict[str, dict] = {}              # upload_id -> {'bucket', 'name', 'data', 'cond'}
_buckets: set[str] = set()
_generation = [int(time.time() * 1e6)]


def _resource(bucket: str, name: str, obj: dict) -> dict:
  return {'kind': 'storage#object', 'bucket': bucket, 'name': name,
          'id': f'{bucket}/{name}/{obj["generation"]}',
          'generation': str(obj['generation']), 'metageneration': '1',
          'size': str(len(obj['data'])), 'contentType': obj['content_type'],
          'md5Hash': base64.b64encode(hashlib.md5(obj['data']).digest()).decode(),
          'timeCreated': obj['time'], 'updated': obj['time'],
          'selfLink': f'/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe="")}',
          'mediaLink': f'/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe="")}'
                       '?alt=media'}


def _precondition(query: dict, current: dict | None) -> int:
  """0 if the request's preconditions hold, else the status to answer (412 or 304)."""
  gen = current['generation'] if current else 0
  if 'ifGenerationMatch' in query and int(query['ifGenerationMatch']) != gen:
    return 412
  if 'ifGenerationNotMatch' in query and int(query['ifGenerationNotMatch']) == gen:
    return 304
  return 0


def _store(bucket: str, name: str, data: bytes, content_type: str, query: dict) -> tuple[int, dict]:
  with _lock:
    current = _objects.get((bucket, name))
    status = _precondition(query, current)
    if status:
      return 412, {'error': {'code': 412, 'message': 'Precondition Failed'}}
    _generation[0] += 1
    obj = {'data': data, 'generation': _generation[0], 'content_type': content_type,
           'time': time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())}
    _objects[(bucket, name)] = obj
    return 200, _resource(bucket, name, obj)


class Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'

  def log_message(self, *args):  # quiet
    pass

  def _send(self, status: int, body: bytes | dict = b'', headers: dict | None = None):
    if isinstance(body, dict):
      body = json.dumps(body).encode()
      headers = {'Content-Type': 'application/json', **(headers or {})}
    self.send_response(status)
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    if status not in (204, 304):
      self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if body and status not in (204, 304) and self.command != 'HEAD':
      self.wfile.write(body)

  def _body(self) -> bytes:
    n = int(self.headers.get('Content-Length') or 0)
    return self.rfile.read(n) if n else b''

  def _parse(self):
    url = urllib.parse.urlsplit(self.path)
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
    return url.path, query

  # ------------------------------------------------------------------ GET / HEAD
  def do_GET(self):
    path, q = self._parse()
    m = re.fullmatch(r'(?:/download)?/storage/v1/b/([^/]+)/o/(.+)', path)
    if m:
      bucket, name = m.group(1), urllib.parse.unquote(m.group(2))
      with _lock:
        obj = _objects.get((bucket, name))
      if obj is None:
        return self._send(404, {'error': {'code': 404, 'message': f'No such object: {name}'}})
      status = _precondition(q, obj)
      if status:
        return self._send(status, {'error': {'code': status, 'message': 'Precondition'}}
                          if status == 412 else b'')
      if q.get('alt') != 'media':
        return self._send(200, _resource(bucket, name, obj))
      data, headers = obj['data'], {'x-goog-generation': str(obj['generation']),
                                    'Content-Type': obj['content_type']}
      rng = re.fullmatch(r'bytes=(\d+)-(\d*)', self.headers.get('Range', ''))
      if rng:
        start = int(rng.group(1))
        end = int(rng.group(2)) if rng.group(2) else len(data) - 1
        if start >= len(data) and len(data) > 0:
          return self._send(416, {'error': {'code': 416, 'message': 'Range not satisfiable'}})
        part = data[start:end + 1]
        headers['Content-Range'] = f'bytes {start}-{start + len(part) - 1}/{len(data)}'
        return self._send(206, part, headers)
      return self._send(200, data, headers)
    m = re.fullmatch(r'/storage/v1/b/([^/]+)/o', path)
    if m:
      return self._list(m.group(1), q)
    m = re.fullmatch(r'/storage/v1/b/([^/]+)', path)
    if m and m.group(1) in _buckets:
      return self._send(200, {'kind': 'storage#bucket', 'name': m.group(1), 'id': m.group(1),
                              'location': 'US', 'storageClass': 'STANDARD'})
    return self._send(404, {'error': {'code': 404, 'message': f'not found: {path}'}})

  do_HEAD = do_GET

  def _list(self, bucket: str, q: dict):
    prefix, delim = q.get('prefix', ''), q.get('delimiter', '')
    start, end = q.get('startOffset', ''), q.get('endOffset', '')
    limit = int(q.get('maxResults') or 1000)
    after = q.get('pageToken', '')
    with _lock:
      names = sorted(n for (b, n) in _objects if b == bucket and n.startswith(prefix)
                     and n >= start and (not end or n < end))
      items, prefixes, last = [], [], ''
      for n in names:
        if n <= after:
          continue
        if delim:
          cut = n.find(delim, len(prefix))
          if cut >= 0:
            p = n[:cut + len(delim)]
            if p not in prefixes:
              if len(items) + len(prefixes) >= limit:
                break
              prefixes.append(p)
            last = n
            continue
        if len(items) + len(prefixes) >= limit:
          break
        items.append(_resource(bucket, n, _objects[(bucket, n)]))
        last = n
      else:
        last = ''
    out = {'kind': 'storage#objects', 'items': items, 'prefixes': prefixes}
    if last:
      out['nextPageToken'] = last
    return self._send(200, out)

  # ------------------------------------------------------------------ POST / PUT
  def do_POST(self):
    path, q = self._parse()
    m = re.fullmatch(r'/upload/storage/v1/b/([^/]+)/o', path)
    if m:
      return self._upload(m.group(1), q)
    m = re.fullmatch(r'/storage/v1/b/([^/]+)/o/(.+)/(copyTo|rewriteTo)/b/([^/]+)/o/(.+)', path)
    if m:
      src = (m.group(1), urllib.parse.unquote(m.group(2)))
      with _lock:
        obj = _objects.get(src)
      if obj is None:
        return self._send(404, {'error': {'code': 404, 'message': 'No such object'}})
      self._body()
      status, res = _store(m.group(4), urllib.parse.unquote(m.group(5)), obj['data'],
                           obj['content_type'], q)
      if status != 200 or m.group(3) == 'copyTo':
        return self._send(status, res)
      return self._send(200, {'kind': 'storage#rewriteResponse', 'done': True,
                              'totalBytesRewritten': res['size'], 'objectSize': res['size'],
                              'resource': res})
    m = re.fullmatch(r'/storage/v1/b/([^/]+)/o/(.+)/moveTo/o/(.+)', path)
    if m:
      self._body()
      src = (m.group(1), urllib.parse.unquote(m.group(2)))
      with _lock:
        obj = _objects.get(src)
      if obj is None:
        return self._send(404, {'error': {'code': 404, 'message': 'No such object'}})
      status, res = _store(m.group(1), urllib.parse.unquote(m.group(3)), obj['data'],
                           obj['content_type'], q)
      if status == 200:
        with _lock:
          _objects.pop(src, None)
      return self._send(status, res)
    return self._send(501, {'error': {'code': 501, 'message': f'not implemented: {path}'}})

  do_PUT = do_POST

  def _upload(self, bucket: str, q: dict):
    kind = q.get('uploadType', 'media')
    body = self._body()
    if kind == 'media':
      status, res = _store(bucket, q['name'], body,
                           self.headers.get('Content-Type') or 'application/octet-stream', q)
      return self._send(status, res)
    if kind == 'multipart':
      boundary = re.search(r'boundary="?([^";]+)"?', self.headers.get('Content-Type', '')).group(1)
      parts = [p for p in body.split(b'--' + boundary.encode()) if p.strip(b'\r\n-')]
      meta_raw = parts[0].split(b'\r\n\r\n', 1)[1].rstrip(b'\r\n')
      head, data = parts[1].split(b'\r\n\r\n', 1)
      meta = json.loads(meta_raw)
      status, res = _store(bucket, meta.get('name') or q['name'], data[:-2] if
                           data.endswith(b'\r\n') else data,
                           meta.get('contentType') or 'application/octet-stream', q)
      return self._send(status, res)
    if kind == 'resumable':
      upload_id = q.get('upload_id')
      if upload_id is None:  # initiation: metadata in the body
        meta = json.loads(body) if body else {}
        upload_id = hashlib.sha1(f'{time.time_ns()}{q}'.encode()).hexdigest()
        with _lock:
          _uploads[upload_id] = {'bucket': bucket, 'name': meta.get('name') or q.get('name'),
                                 'data': b'', 'query': q,
                                 'content_type': meta.get('contentType') or
                                 'application/octet-stream'}
        location = (f'http://{self.headers["Host"]}/upload/storage/v1/b/{bucket}/o?'
                    f'uploadType=resumable&upload_id={upload_id}')
        return self._send(200, b'', {'Location': location})
      with _lock:
        up = _uploads.get(upload_id)
      if up is None:
        return self._send(404, {'error': {'code': 404, 'message': 'No such upload'}})
      up['data'] += body
      total = re.search(r'/(\d+|\*)$', self.headers.get('Content-Range', 'bytes */*'))
      if total and total.group(1) != '*' and len(up['data']) >= int(total.group(1)):
        with _lock:
          _uploads.pop(upload_id, None)
        status, res = _store(bucket, up['name'], up['data'], up['content_type'], up['query'])
        return self._send(status, res)
      return self._send(308, b'', {'Range': f'bytes=0-{len(up["data"]) - 1}'} if up['data']
                        else {})
    return self._send(501, {'error': {'code': 501, 'message': f'uploadType={kind}'}})

  # ------------------------------------------------------------------ DELETE
  def do_DELETE(self):
    path, q = self._parse()
    m = re.fullmatch(r'/storage/v1/b/([^/]+)/o/(.+)', path)
    if not m:
      return self._send(501, {'error': {'code': 501, 'message': 'not implemented'}})
    key = (m.group(1), urllib.parse.unquote(m.group(2)))
    with _lock:
      obj = _objects.get(key)
      if obj is None:
        return self._send(404, {'error': {'code': 404, 'message': 'No such object'}})
      if _precondition(q, obj):
        return self._send(412, {'error': {'code': 412, 'message': 'Precondition Failed'}})
      del _objects[key]
    return self._send(204)


class _Server(http.server.ThreadingHTTPServer):

  def handle_error(self, request, client_address):
    pass  # a client that hangs up mid-response (at its exit) is not the server's error


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--host', default='127.0.0.1')
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--bucket', action='append', default=[])
  args = parser.parse_args()
  _buckets.update(args.bucket)
  server = _Server((args.host, args.port), Handler)
  server.daemon_threads = True
  server.serve_forever()


if __name__ == '__main__':
  main()
