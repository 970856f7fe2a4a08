"""`poser fetch-blazepose`: MediaPipe's BlazePose landmark networks (Apache-2.0) into poser's cache.

They ship inside registry packages, so a clean machine gets them from the package registries
it already reaches: the npm package `@mediapipe/pose` holds lite, full and heavy; the
`mediapipe` 0.10.14 wheel on PyPI holds full. A local .tflite, .tgz or .whl works offline.
Each file is checked against the SHA-256 of the version poser's rebuild was made from.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from poser.errors import PoserError
from poser.files import write_bytes
from poser.models.blazepose import VARIANTS, blazepose_cache, tflite_name

SHA256 = {
    "lite": "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
    "full": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    "heavy": "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
}
NPM_PACKAGE = "@mediapipe/pose"
PYPI_PACKAGE = "mediapipe==0.10.14"


def fetch_blazepose(source: str | None = None, dest: Path | None = None) -> dict[str, str]:
    """Put every variant `source` holds into `dest` (poser's cache); returns variant -> path.
    `source`: a .tflite, an npm .tgz or a mediapipe .whl; None: `npm pack`, else `pip download`."""
    dest = Path(dest or blazepose_cache())
    if source is not None:
        found = _from_archive(Path(source))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            found = _from_archive(_download(Path(tmp)))
    out = {}
    for variant, data in found.items():
        path = dest / tflite_name(variant)
        write_bytes(path, data)
        out[variant] = str(path)
    return out


def _download(tmp: Path) -> Path:
    """npm's tarball (all three variants) where npm is installed, else PyPI's wheel (full)."""
    if shutil.which("npm"):
        r = subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        tgz = sorted(tmp.glob("*.tgz"))
        if r.returncode == 0 and tgz:
            return tgz[0]
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), PYPI_PACKAGE],
                       capture_output=True, text=True)
    wheels = sorted(tmp.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise PoserError(f"could not fetch {NPM_PACKAGE} (npm) or {PYPI_PACKAGE} (pip): {last}")
    return wheels[0]


def _from_archive(path: Path) -> dict[str, bytes]:
    """variant -> verified bytes of the pose_landmark_*.tflite files inside `path`."""
    if not path.is_file():
        raise PoserError(f"`from_run` {path}: no such file")
    names = {tflite_name(v): v for v in VARIANTS}
    files: dict[str, bytes] = {}
    if path.name in names:
        files[names[path.name]] = path.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if Path(info.filename).name in names:
                    files[names[Path(info.filename).name]] = z.read(info)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as t:
            for m in t.getmembers():
                if m.isfile() and Path(m.name).name in names:
                    files[names[Path(m.name).name]] = t.extractfile(m).read()
    else:
        raise PoserError(f"`from_run` {path}: not a .tflite, a .whl (zip) or an npm .tgz")
    if not files:
        raise PoserError(f"`from_run` {path}: holds no pose_landmark_{{{','.join(VARIANTS)}}}.tflite")
    for variant, data in files.items():
        digest = hashlib.sha256(io.BytesIO(data).getbuffer()).hexdigest()
        if digest != SHA256[variant]:
            raise PoserError(f"{path}: its {tflite_name(variant)} is not the version poser rebuilds "
                             f"(sha256 {digest[:12]}..., expected {SHA256[variant][:12]}...)")
    return files
