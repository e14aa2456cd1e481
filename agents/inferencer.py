"""sentry_inferencer: verify a signed checkpoint and its link to its training data, then serve it over
the Open Inference Protocol v2 (KServe / Triton HTTP/REST).

    python -m agents.inferencer --model ckpt/digits.safetensors --public-key trainer.pub.pem \\
        --dataset-root 9c6ae156... --port 8000

Before serving: the checkpoint's signature is verified with the trainer's public key, or for a
keyless (Sigstore) signature its identity and issuer (``--identity``, ``--issuer``), every file
and every tensor; it must name the dataset it was trained on (docs/spec.md §3.1), and, when
pinned, that dataset's root (``--dataset-root``) or its very signature (``--dataset-signature``
with ``--dataset-public-key``, or ``--dataset-identity`` and ``--dataset-issuer``). The weights are
loaded, ``sentry.protect(model)`` verifies the tensors in memory against the same signature before
the first forward, and any change to them afterwards stops inference. Any failure: one sentence, exit 1, nothing served.

Endpoints (JSON; tensor data as JSON or with Triton's binary tensor extension):
  GET  /v2/health/live, /v2/health/ready, /v2
  GET  /v2/models/NAME[/versions/1]          metadata, with "sentry": what was verified
  GET  /v2/models/NAME[/versions/1]/ready
  POST /v2/models/NAME[/versions/1]/infer    input "input" FP32 [N, C, H, W], values 0..1
                                             (digits: [N, 1, 8, 8], grey level / 255)
       outputs "output" FP32 [N, classes] (logits), "probabilities" FP32 [N, classes],
               "class" INT64 [N] (the index of the class folder, in sorted order)
"""
from __future__ import annotations

import json
import re
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sentry import SentryError, VerificationError

from .common import (
    EXIT_CODES,
    Parser,
    add_trust_config_option,
    add_verifying_options,
    log,
    run,
    signature_beside,
    verifying,
)

AGENT = "sentry_inferencer"
VERSION = "1"
MAX_BODY = 16 << 20  # bytes of one request
MAX_BATCH = 4096
OUTPUTS = {"output": "FP32", "probabilities": "FP32", "class": "INT64"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadRequest(Exception):
    """A request the server refuses (400), with the reason for the client."""


class Served:
    """The verified, protected model, what was verified, and inference on OIP v2 request bodies."""

    def __init__(self, name: str, model, verified: dict):
        self.name, self.model, self.verified = name, model, verified
        self.input_shape = [int(v) for v in model.input_shape.tolist()]
        self.classes = int(model.classifier[-1].out_features)
        self._lock = threading.Lock()  # one forward at a time: protect's checks and the model are shared

    def metadata(self) -> dict:
        return {
            "name": self.name, "versions": [VERSION], "platform": "pytorch_safetensors",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *self.input_shape]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, self.classes]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, self.classes]},
                        {"name": "class", "datatype": "INT64", "shape": [-1]}],
            "sentry": self.verified,
        }

    def infer(self, request: dict, binary: bytes) -> tuple[dict, bytes]:
        """The response header and its binary part (empty when every output is JSON)."""
        import numpy as np
        import torch

        x = self._input(request, binary)
        with self._lock, torch.no_grad():
            logits = self.model(torch.from_numpy(x))
        values = {"output": logits, "probabilities": torch.softmax(logits, 1), "class": logits.argmax(1)}
        binary_default = _parameters(request).get("binary_data_output", False) is True
        wanted = request.get("outputs") or [{"name": n} for n in OUTPUTS]
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise BadRequest("outputs must be a list of objects")
        outputs, chunks = [], []
        for requested in wanted:
            name = requested.get("name")
            if name not in OUTPUTS:
                raise BadRequest(f"unknown output {name!r}: this model has {', '.join(OUTPUTS)}")
            array = values[name].numpy().astype("<f4" if OUTPUTS[name] == "FP32" else "<i8")
            entry = {"name": name, "datatype": OUTPUTS[name], "shape": list(array.shape)}
            if _parameters(requested).get("binary_data", binary_default) is True:
                data = np.ascontiguousarray(array).tobytes()
                entry["parameters"] = {"binary_data_size": len(data)}
                chunks.append(data)
            else:
                entry["data"] = array.reshape(-1).tolist()
            outputs.append(entry)
        response = {"model_name": self.name, "model_version": VERSION, "outputs": outputs}
        if isinstance(request.get("id"), str):
            response["id"] = request["id"]
        return response, b"".join(chunks)

    def _input(self, request: dict, binary: bytes):
        import numpy as np

        inputs = request.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise BadRequest("expected exactly one input, named 'input'")
        tensor = inputs[0]
        shape = tensor.get("shape")
        if tensor.get("name") != "input" or tensor.get("datatype") != "FP32":
            raise BadRequest("the input must be named 'input' with datatype FP32")
        if (not isinstance(shape, list) or len(shape) != 4 or not all(type(v) is int for v in shape)
                or shape[1:] != self.input_shape or not 0 < shape[0] <= MAX_BATCH):
            raise BadRequest(f"the input shape must be [N, {', '.join(map(str, self.input_shape))}] "
                             f"with N from 1 to {MAX_BATCH}")
        count = shape[0] * shape[1] * shape[2] * shape[3]
        size = _parameters(tensor).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size != count * 4 or size != len(binary):
                raise BadRequest(f"the binary input must be {count * 4} bytes, the whole binary part")
            x = np.frombuffer(binary, dtype="<f4").astype(np.float32)
        else:
            if binary:
                raise BadRequest("binary data was sent but no input names its binary_data_size")
            try:
                x = np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise BadRequest("the input data must be a list of numbers") from None
            if x.size != count:
                raise BadRequest(f"the input holds {x.size} values, its shape says {count}")
        if not np.isfinite(x).all():
            raise BadRequest("the input holds values that are not finite")
        return x.reshape(shape)


def _parameters(obj: dict) -> dict:
    """An OIP object's optional ``parameters`` map."""
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    return parameters


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def make_handler(served: Served):
    models = re.compile(rf"/v2/models/{re.escape(served.name)}(?:/versions/{VERSION})?(/ready|/infer)?")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sentry-inferencer"

        def log_message(self, format, *args):
            log(AGENT, f"{self.address_string()} {format % args}")

        def _send(self, status, body: dict, binary: bytes = b""):
            header = json.dumps(body).encode()
            self.send_response(status)
            if binary:
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Inference-Header-Content-Length", str(len(header)))
            else:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(header) + len(binary)))
            self.end_headers()
            self.wfile.write(header + binary)

        def _route(self):
            path = self.path.split("?", 1)[0]
            return path, models.fullmatch(path)

        def do_GET(self):
            path, match = self._route()
            if path == "/v2/health/live":
                return self._send(HTTPStatus.OK, {"live": True})
            if path == "/v2/health/ready":
                return self._send(HTTPStatus.OK, {"ready": True})
            if path == "/v2":
                import sentry

                return self._send(HTTPStatus.OK, {"name": AGENT, "version": sentry.__version__,
                                                  "extensions": ["binary_tensor_data"]})
            if match and match.group(1) is None:
                return self._send(HTTPStatus.OK, served.metadata())
            if match and match.group(1) == "/ready":
                return self._send(HTTPStatus.OK, {"name": served.name, "ready": True})
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint or model: {path}"})

        def do_POST(self):
            path, match = self._route()
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                return self._send(HTTPStatus.BAD_REQUEST, {"error": f"a request needs a Content-Length of at "
                                                                    f"most {MAX_BODY} bytes"})
            body = self.rfile.read(length)
            if not (match and match.group(1) == "/infer"):
                return self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint or model: {path}"})
            try:
                response, binary = served.infer(*self._parse(body))
            except BadRequest as exc:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except VerificationError as exc:  # protect found the weights changed since they verified
                log(AGENT, f"refused to infer: {exc}")
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"the model no longer verifies: {exc}"})
            except Exception as exc:  # a request nobody foresaw: one line in the log, not a traceback
                log(AGENT, f"internal error on {path}: {type(exc).__name__}")
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            self._send(HTTPStatus.OK, response, binary)

        def _parse(self, body: bytes):
            if self.headers.get("Content-Encoding", "identity") != "identity":
                raise BadRequest("compressed requests are not supported")
            header_length = self.headers.get("Inference-Header-Content-Length")
            try:
                split = len(body) if header_length is None else int(header_length)
                if not 0 < split <= len(body):
                    raise ValueError
                request = json.loads(body[:split], parse_constant=_no_constants)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise BadRequest("the request is not a JSON inference request") from None
            if not isinstance(request, dict):
                raise BadRequest("the request is not a JSON object")
            return request, body[split:]

    return Handler


def build_parser() -> Parser:
    p = Parser(prog="python -m agents.inferencer", description=__doc__, epilog=EXIT_CODES)
    p.add_argument("--model", required=True, type=Path, help="the signed checkpoint (.safetensors)")
    add_verifying_options(p, "", "the trainer's")
    p.add_argument("--signature", type=Path, help="the checkpoint's signature (default: CKPT.sig beside it, "
                                                  "e.g. digits.safetensors.sig)")
    p.add_env_option("--dataset-root", "SENTRY_DATASET_ROOT", required=False, metavar="HEX",
                     help="pin the training data: the model must name this dataset root (64 hex digits)")
    p.add_argument("--dataset-signature", type=Path,
                   help="pin the training data to this dataset signature (verified with --dataset-public-key, "
                        "or --dataset-identity and --dataset-issuer)")
    add_verifying_options(p, "dataset-", "for --dataset-signature, the dataset owner's")
    add_trust_config_option(p)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--name", default="digits", help="the model's name in the URLs (default digits)")
    return p


def verify(args) -> Served:
    """Everything checked before serving; VerificationError (exit 1) on any failure."""
    from safetensors.torch import load_file

    import sentry

    from .model import SmallCNN

    pinned = args.dataset_root.lower() if args.dataset_root else None
    if pinned is not None and not _HEX64.fullmatch(pinned):
        raise SentryError(f"--dataset-root {args.dataset_root!r} is not 64 hex digits")
    trainer = verifying(args, "")
    owner = verifying(args, "dataset-", required=args.dataset_signature is not None)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.name):
        raise SentryError(f"--name {args.name!r}: use 1 to 64 letters, digits, '_', '.' or '-'")
    sig = signature_beside(args.model, args.signature)
    report = sentry.verify_model(args.model, public_key=trainer.verifier, signature=sig)
    log(AGENT, f"verified {args.model} with {sig}: manifest root {report.root}, {report.checked} items, "
               f"signed with {trainer.who}")
    if not report.training_data:
        raise VerificationError(f"{sig} does not name the data the model was trained on")
    links = report.training_data
    if pinned is not None and pinned not in {link.root for link in links}:
        raise VerificationError(f"{args.model} was trained on dataset root {links[0].root}, not the pinned {pinned}")
    if args.dataset_signature:
        expected = sentry.dataset_link(args.dataset_signature, owner.verifier)
        if expected not in links:
            raise VerificationError(f"{args.model} was not trained on the dataset that {args.dataset_signature} signs")
    for link in links:
        log(AGENT, f"trained on dataset {link.name}: root {link.root}, dataset signature sha256 "
                   f"{link.signature_sha256}{' (pinned)' if link.root == pinned else ''}")

    model = SmallCNN.from_state_dict(load_file(args.model))
    model.eval()
    sentry.protect(model, public_key=trainer.verifier, signature=sig)
    served = Served(args.name, model, {
        "verified": True,
        "checkpoint": args.model.name,
        "manifest_root": report.root,
        **trainer.claims,
        "training_data": [link.to_json() for link in links],
        "dataset_root": links[0].root,
        "dataset_root_pinned": pinned is not None,
    })
    import torch

    with torch.no_grad():  # the first forward verifies the tensors in memory (protect)
        model(torch.zeros(1, *served.input_shape))
    log(AGENT, f"loaded {args.model}: the tensors in memory verified against {sig}; protect is on")
    return served


def _stop_on_sigterm():
    """A container's PID 1 gets no default SIGTERM handler: stop serving on it (docker stop)."""
    def stop(*_):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    served = verify(args)
    try:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(served))
    except OSError as exc:
        raise SentryError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    server.daemon_threads = True
    _stop_on_sigterm()
    host, port = server.server_address[:2]
    log(AGENT, f"serving {args.name} on http://{host}:{port} (Open Inference Protocol v2)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log(AGENT, "stopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(run(AGENT, main))
