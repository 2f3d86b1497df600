"""gcp-storage-emulator as the GCS tests run it: `python gcs_emulator_main.py PORT BUCKET`.

Real Cloud Storage sends an object's generation with its data (`x-goog-generation`,
`x-goog-metageneration`); the emulator does not. TensorStore reads the generation from that
header and conditions its next write of the same object on it, which OCDBT checkpoints (Orbax's
default format) do with their manifest: without the header the generation reads as 0 and the
write fails with "Malformed StorageGeneration". This launcher adds the two headers to the
emulator's object downloads and is otherwise the emulator's own `start --in-memory`.
"""

import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # pylint: disable=broad-except  (not found: the 404 stands as it is)
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj["metageneration"])


def main(port: int, bucket: str) -> None:
  objects.download = _download_with_generation  # `objects.get(alt=media)` calls it by name
  for _, routes in server.HANDLERS:  # the download routes hold the function itself
    for method, handler in list(routes.items()):
      if handler is _download:
        routes[method] = _download_with_generation
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
