"""A stand-in token issuer for the contract test: introspection answers inactive, the
JWKS is empty. The contract test checks the HTTP contract, not the token logic (that is
tests/tokens.rs, against real keys); the routes only need an issuer that answers."""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def _send(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code); self.send_header("content-type","application/json")
        self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0); self.rfile.read(n)
        if self.path == "/oauth/v2/introspect": self._send(200, {"active": False})
        else: self._send(200, {})
    def do_GET(self):
        if self.path == "/oauth/v2/keys": self._send(200, {"keys": []})
        elif self.path.startswith("/.well-known"): self._send(404, {})
        else: self._send(404, {})
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
