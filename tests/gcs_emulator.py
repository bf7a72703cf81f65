"""The GCS API emulator the tests run: gcp-storage-emulator, file-backed, on a free local port.

gcp-storage-emulator (2026.7.19) answers a media download (`GET .../o/NAME?alt=media`) without
the `x-goog-generation` header that GCS sends. TensorStore (Orbax's checkpoints) takes an object's
generation from that header; without it every read carries an invalid generation and the first
conditional write (OCDBT committing its manifest) fails with `Malformed StorageGeneration`. Run as
`python -m tests.gcs_emulator DIR PORT BUCKET`, this module adds the two headers GCS sends
(`x-goog-generation`, `x-goog-metageneration`) to the emulator's download handler and otherwise
starts it as its CLI does. The emulator still ignores preconditions (`ifGenerationMatch`): every
write succeeds, which is what a single writer sees on GCS. Objects live under DIR, so a stopped
and restarted emulator serves the same bucket.

`Emulator` starts/stops it and gives the environment that points each client at it: gcsfs
(epath's `gs://` here) through STORAGE_EMULATOR_HOST, TensorStore through TENSORSTORE_GCS_HTTP_URL.
"""

import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:
  """A gcp-storage-emulator subprocess serving `bucket`, its objects under `store`."""

  def __init__(self, store: pathlib.Path, bucket: str) -> None:
    self.store, self.bucket, self.port = store, bucket, _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.proc: subprocess.Popen | None = None

  def env(self) -> dict[str, str]:
    """Variables that send gcsfs and TensorStore to this emulator, with no credential look-up."""
    return {
      "STORAGE_EMULATOR_HOST": self.url,  # gcsfs
      "TENSORSTORE_GCS_HTTP_URL": self.url,  # TensorStore (Orbax)
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no metadata-server probe
      "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no Application Default Credentials probe
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no zonal-bucket probe
      "NO_GCE_CHECK": "true",
    }

  def start(self) -> None:
    cmd = [sys.executable, "-m", "tests.gcs_emulator", str(self.store), str(self.port), self.bucket]
    self.proc = subprocess.Popen(
      cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(400):
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}")
        return
      except (urllib.error.URLError, ConnectionError):
        if self.proc.poll() is not None:
          break
        time.sleep(0.05)
    self.stop()
    raise RuntimeError(f"the GCS emulator did not start on port {self.port}")

  def stop(self) -> None:
    if self.proc is not None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
      self.proc = None


def _serve(store: str, port: int, bucket: str) -> None:
  from gcp_storage_emulator.handlers import objects

  download = objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status.value in (200, 206):
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = obj["generation"]
      response["x-goog-metageneration"] = obj["metageneration"]

  objects.download = download_with_generation  # before the server binds its routes
  from gcp_storage_emulator.server import create_server

  server = create_server("127.0.0.1", port, in_memory=False, default_bucket=bucket, data_dir=store)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  server.run()


if __name__ == "__main__":
  _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
