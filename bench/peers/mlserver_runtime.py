"""MLServer serving the champion: a custom runtime over the V2 inference protocol. Each
request carries one customer as a JSON string (input ``customer``, BYTES); MLServer's adaptive
batching stacks requests along the first dimension (bench/peers: ``mlserver_settings``
writes the folder ``mlserver start`` serves)."""

from __future__ import annotations

import json

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from bench.peers.scoring import PeerScorer


class ChurnRuntime(MLModel):
    async def load(self) -> bool:
        self.peer = PeerScorer()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        answers = self.peer.answer([self.peer.validate(text) for text in texts])
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output(
            "prediction", [json.dumps(a) for a in answers])])

