"""Plain HTTP requests with the standard library (the scripts' raw requests beside the openai client)."""
import json as _json
import urllib.error
import urllib.request


class Response:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.content = body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.content)


def request(method, url, json=None, content=None, headers=None, timeout=30):
    """Sends one request; returns a Response for every status (errors included)."""
    headers = dict(headers or {})
    data = content
    if json is not None:
        data = _json.dumps(json).encode()
        headers.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


def get(url, **kw):
    return request("GET", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)
