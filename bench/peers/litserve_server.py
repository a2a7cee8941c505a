"""LitServe serving the champion: ``python -m bench.peers.litserve_server PORT WORKERS
MAX_BATCH_SIZE BATCH_TIMEOUT`` (in the litserve virtualenv; bench/peers)."""

from __future__ import annotations

import sys

import litserve as ls

from bench.peers.scoring import PeerScorer


class ChurnAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.peer = PeerScorer()

    def decode_request(self, request: dict) -> object:
        return self.peer.validate(request)

    def batch(self, inputs: list) -> list:
        return inputs

    def predict(self, customers: list) -> list[dict]:
        return self.peer.answer(customers)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> dict:
        return output


if __name__ == "__main__":
    port, workers, max_batch_size, batch_timeout = sys.argv[1:5]
    server = ls.LitServer(ChurnAPI(max_batch_size=int(max_batch_size),
                                   batch_timeout=float(batch_timeout)),
                          accelerator="cpu", workers_per_device=int(workers))
    server.run(port=int(port), host="127.0.0.1", generate_client_file=False)
